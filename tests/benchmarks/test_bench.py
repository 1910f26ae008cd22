"""``tdmi-bench`` end to end on tdmi-tiny (CPU): the default job, the PoseTrack harness, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tdmi.cli.bench import app
from tdmi.cli.common import run_app
from tdmi.data.annotations import load_annotation_file
from tdmi.eval import evaluate
from tdmi.export.pipeline import ArtifactCache
from tdmi.plugins.availability import tensorrt_available

FAST = ["--config", "tdmi-tiny", "--iters", "3", "--warmup", "1", "--calib-clips", "4", "--no-progress"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifact cache for the module: the exports are made once and reused."""
    return tmp_path_factory.mktemp("tdmi-cache")


def test_default_job_end_to_end(cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    rc = run_app(app, [*FAST, "--cache-dir", str(cache_dir), "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.out.count("RANDOM WEIGHTS") == 1  # the banner once
    assert "speed-up (IQR)" in captured.out and "machine load while timing" in captured.out
    assert max(len(line) for line in captured.out.splitlines()) <= 120  # fits a 120-column terminal
    assert "latency and agreement with the reference" in captured.out
    report = json.loads(out.read_text())
    assert report["random_weights"] is True and report["reference"] == "torch"
    assert report["config"]["name"] == "tdmi-tiny"
    machine = report["machine"]
    assert machine["cpu"] and machine["cpu_cores"] >= 1 and machine["date"]
    assert machine["versions"]["torch"] and machine["versions"]["onnxruntime"]
    rows = {r["name"]: r for r in report["latency"]}
    torch_row, ort = rows["torch"], rows["ort-fp32"]
    assert torch_row["status"] == "reference" and torch_row["iters"] == 3
    assert ort["status"] == "ok" and ort["batch"] == 1 and ort["iters"] == 3
    assert ort["p50_ms"] > 0 and ort["p50_ms"] <= ort["p90_ms"] <= ort["p99_ms"]
    assert ort["throughput"] > 0 and ort["speedup"] > 0
    assert ort["speedup_p25"] <= ort["speedup"] <= ort["speedup_p75"] and ort["speedup_rounds"] == 3
    threads = report["settings"]["threads"]
    assert threads >= 1 and f"threads: {threads} intra-op for every CPU backend" in captured.out
    assert "others" in report["settings"]["load"]
    assert ort["kp_agreement"] >= 0.95, ort
    assert ort["hm_max_rel"] < 1e-3 and "NaN" not in ort["flags"]
    int8 = rows["ort-int8"]
    assert int8["status"] in ("ok", "skipped"), int8
    if int8["status"] == "ok":
        assert int8["kp_agreement"] is not None and int8["hm_max_abs"] is not None
    for name in ("ort-fp16-trtgraph", "ort-int8-trtgraph"):
        assert name not in rows  # the TensorRT-targeted graphs are behind --variants all
    if not tensorrt_available():
        assert rows["trt"]["status"] == "skipped" and "TensorRT" in rows["trt"]["note"]
    # Issue 20: every artifact was built in a child process, and the peak RSS is reported.
    memory = report["memory"]
    built = [c["what"] for c in memory["children"]]
    assert built[:2] == ["build weights.pt", "build model-fp32.onnx"], built
    assert memory["peak_rss_mib"] >= memory["self_peak_rss_mib"] > 0
    assert all(c["peak_rss_mib"] > 0 for c in memory["children"])
    assert "peak memory:" in captured.out
    md = out.with_suffix(".md").read_text()
    assert "| ort-fp32 | fp32 | 1 |" in md and "RANDOM WEIGHTS" in md and machine["cpu"] in md
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Second run: everything comes from the cache, nothing is exported again.
    rc = run_app(app, [*FAST, "--cache-dir", str(cache_dir), "--backend", "torch,ort", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    again = json.loads(out.read_text())
    assert not any("built into the cache" in n for n in again["notes"]), again["notes"]
    assert again["memory"]["children"] == []  # a warm cache starts no build process
    assert [r["name"] for r in again["latency"]] == ["torch", "ort-fp32"]


def test_all_variants_label_trt_graphs_as_accuracy_checks(cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.json"
    rc = run_app(
        app, [*FAST, "--cache-dir", str(cache_dir), "--variants", "all", "--batch", "1,2", "--json", str(out)]
    )
    assert rc == 0
    rows = json.loads(out.read_text())["latency"]
    checks = [r for r in rows if r["name"] in ("ort-fp16-trtgraph", "ort-int8-trtgraph")]
    assert checks, "the TensorRT-targeted graphs must have rows (run, or skipped with a reason)"
    for r in checks:
        assert r["label"] == "accuracy check (TensorRT-targeted graph)"
        if r["status"] == "ok":
            assert r["p50_ms"] is None and r["kp_agreement"] is not None  # compared, not timed
        else:
            assert r["status"] == "skipped" and r["note"]
    assert {r["batch"] for r in rows if r["name"] == "ort-fp32"} == {1, 2}


def test_posetrack_harness_on_fixture(
    cache_dir: Path, posetrack18: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preds = tmp_path / "preds"
    out = tmp_path / "acc.json"
    args = [*FAST, "--cache-dir", str(cache_dir), "--backend", "torch", "--data", str(posetrack18)]
    args += ["--split", "val", "--missing-frames", "nearest", "--pred-dir", str(preds), "--json", str(out)]
    rc = run_app(app, args)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "PoseTrack mAP per joint group" in captured.out
    report = json.loads(out.read_text())
    assert report["dataset"]["samples"] == 14 and report["dataset"]["missing_frames"] == "nearest"
    (row,) = report["accuracy"]
    assert row["name"] == "torch" and row["status"] == "reference"
    assert set(row["groups"]) == {"Head", "Shou", "Elb", "Wri", "Hip", "Knee", "Ankl", "Total"}
    assert all(v is None or 0.0 <= v <= 100.0 for v in row["groups"].values())
    folder = preds / "torch"
    gt_dir = posetrack18 / "annotations" / "val"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in gt_dir.glob("*.json"))
    n_people = 0
    for f in sorted(folder.iterdir()):
        doc = json.loads(f.read_text())
        assert set(doc) == {"images", "annotations", "categories"}
        gt = json.loads((gt_dir / f.name).read_text())
        assert [im["id"] for im in doc["images"]] == [im["id"] for im in gt["images"]]
        for ann in doc["annotations"]:
            assert len(ann["keypoints"]) == 51 and len(ann["scores"]) == 17
        n_people += len(doc["annotations"])
        assert load_annotation_file(f)[0].frames  # our own reader accepts it
    assert n_people == 14
    rescored = evaluate(gt_dir, folder)  # the files alone reproduce the reported score
    assert rescored.groups["Total"] == pytest.approx(row["groups"]["Total"])


def test_missing_neighbour_frames_without_nearest(
    cache_dir: Path, posetrack18: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*FAST, "--cache-dir", str(cache_dir), "--backend", "torch", "--data", str(posetrack18)]
    rc = run_app(app, [*args, "--pred-dir", str(tmp_path / "p")])
    assert rc == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "is missing" in err and "--missing-frames nearest" in err


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--backend", "torch,tflite"], 2, "unknown backend 'tflite'"),
        (["--variants", "fastest"], 2, "unknown --variants 'fastest'"),
        (["--batch", "0"], 2, "batch sizes must be positive"),
        (["--iters", "0"], 2, "--iters must be >= 1"),
        (["--missing-frames", "skip"], 2, "Invalid value for '--missing-frames'"),
        (["--config", "tdmi-w64"], 2, "unknown preset 'tdmi-w64'"),
        (["--int8-op-types", "Conv,Ad"], 2, "--int8-op-types: unknown ONNX op types to quantize: Ad"),
    ],
)
def test_bad_options(
    extra: list[str], code: int, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run_app(app, [*FAST, "--cache-dir", str(tmp_path), *extra])
    assert rc == code
    assert message in " ".join(capsys.readouterr().err.split())


def test_missing_and_malformed_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = [*FAST, "--cache-dir", str(tmp_path / "cache"), "--backend", "torch"]
    assert run_app(app, [*base, "--data", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_app(app, [*base, "--data", str(empty)]) == 1
    assert "no .json" in capsys.readouterr().err
    broken = tmp_path / "broken"
    (broken / "annotations" / "val").mkdir(parents=True)
    (broken / "annotations" / "val" / "000001_x.json").write_text('{"images": [ {"id": 1,')
    assert run_app(app, [*base, "--data", str(broken)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "not valid JSON" in err and "000001_x.json" in err
    wrong = tmp_path / "wrong"
    (wrong / "annotations" / "val").mkdir(parents=True)
    (wrong / "annotations" / "val" / "a.json").write_text('{"videos": []}')
    assert run_app(app, [*base, "--data", str(wrong)]) == 1
    assert "not a PoseTrack annotation file" in " ".join(capsys.readouterr().err.split())


def _sidecar(engine: Path, config_name: str) -> None:
    from tdmi.artifacts.sidecar import (
        BatchProfile,
        BuildEnvironment,
        EngineSidecar,
        GpuInfo,
        TensorInfo,
        write_sidecar,
    )
    from tdmi.model import get_preset

    cfg = get_preset(config_name)
    sidecar = EngineSidecar(
        model_config=cfg.to_dict(),
        precision="fp16",
        inputs=(TensorInfo("frames", (-1, 3, 3, *cfg.input_size), "float32"),),
        outputs=(TensorInfo("heatmaps", (-1, 17, *cfg.heatmap_size), "float32"),),
        profile=BatchProfile(1, 1, 4),
        environment=BuildEnvironment("10.9.0", "12.8", "12.8", GpuInfo("NVIDIA H100", "9.0")),
        plugin=None,
        source_onnx_sha256="0" * 64,
        engine_sha256="0" * 64,
        toolkit_version="0.1.0",
    )
    write_sidecar(engine.with_name(engine.name + ".json"), sidecar)


def test_engine_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = [*FAST, "--cache-dir", str(tmp_path / "cache"), "--backend", "torch"]
    engine = tmp_path / "model.engine"
    assert run_app(app, [*base, "--engine", str(engine)]) == 1
    assert "not found" in capsys.readouterr().err
    engine.write_bytes(b"not really an engine")
    assert run_app(app, [*base, "--engine", str(engine)]) == 1
    assert "sidecar" in capsys.readouterr().err
    _sidecar(engine, "tdmi-w32-256x192")
    assert run_app(app, [*base, "--engine", str(engine)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "was built for config 'tdmi-w32-256x192', not 'tdmi-tiny'" in err


@pytest.mark.skipif(bool(tensorrt_available()), reason="checks the row of an absent TensorRT")
def test_engine_without_tensorrt_is_a_skipped_row(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine bytes")
    _sidecar(engine, "tdmi-tiny")
    out = tmp_path / "b.json"
    args = [*FAST, "--cache-dir", str(tmp_path / "cache"), "--backend", "torch", "--engine", str(engine)]
    assert run_app(app, [*args, "--json", str(out)]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["latency"]}
    assert rows["trt-fp16"]["status"] == "skipped" and "TensorRT" in rows["trt-fp16"]["note"]
    assert rows["torch"]["status"] == "reference"


def test_checkpoint_weights_are_benchmarked(cache_dir: Path, tmp_path: Path) -> None:
    """--checkpoint: its config is used, its hash keys the cache, and the exports carry its weights."""
    import torch

    from tdmi.model import TDMI, get_preset, save_checkpoint

    torch.manual_seed(123)
    ckpt = save_checkpoint(TDMI(get_preset("tdmi-tiny")), tmp_path / "trained.pt")
    out = tmp_path / "ckpt.json"
    args = ["--iters", "2", "--warmup", "0", "--no-progress", "--backend", "torch,ort-fp32"]
    rc = run_app(app, [*args, "--checkpoint", str(ckpt), "--cache-dir", str(cache_dir), "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["random_weights"] is False and report["config"]["name"] == "tdmi-tiny"
    assert str(ckpt) in report["weights"] and "sha256" in report["weights"]
    random_folder = ArtifactCache.open(cache_dir, get_preset("tdmi-tiny")).folder
    assert Path(report["settings"]["cache"]).parent == cache_dir
    assert Path(report["settings"]["cache"]) != random_folder  # keyed by the checkpoint's hash
    ort = next(r for r in report["latency"] if r["name"] == "ort-fp32")
    assert ort["kp_agreement"] >= 0.95 and ort["hm_max_rel"] < 1e-3


@pytest.mark.filterwarnings("ignore:calibrating on the built-in sample clips")
def test_int8_op_types_make_their_own_cache_entry(tmp_path: Path) -> None:
    """``--int8-op-types`` builds a graph with that recipe, never reusing the default one's file."""
    from tdmi.export import build_calibration_set, inspect
    from tdmi.model import get_preset

    cfg = get_preset("tdmi-tiny")
    cache = ArtifactCache.open(tmp_path, cfg)
    calib = build_calibration_set(cfg, None, num_clips=2)
    default = cache.artifact_path("int8-onnxruntime", 2, None, "percentile")
    path = cache.variant("int8-onnxruntime", 2, lambda: calib, None, "percentile", ("Conv", "Add"))
    assert path != default and not default.exists()
    recipe = inspect(path)["extra"]["recipe"]
    assert recipe["op_types"] == ["Conv", "Add"] and recipe["calibration"] == "percentile"


def test_cache_heals_truncated_weights_like_onnx(tmp_path: Path) -> None:
    from tdmi.model import get_preset

    cache = ArtifactCache.open(tmp_path, get_preset("tdmi-tiny"))
    path = cache.weights()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a run killed mid-copy, a full disk
    again = ArtifactCache.open(tmp_path, get_preset("tdmi-tiny"))
    assert again.weights() == path and again.built == ["weights.pt"]
    from tdmi.model import load_checkpoint

    assert load_checkpoint(path).config.name == "tdmi-tiny"


def test_concurrent_runs_build_a_cache_entry_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    import tdmi.model
    from tdmi.model import get_preset

    real = tdmi.model.save_checkpoint

    def slow_save(*args: object, **kwargs: object) -> object:
        time.sleep(0.5)  # both runs are past the "is it cached?" check unless the entry is locked
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tdmi.model, "save_checkpoint", slow_save)
    caches = [ArtifactCache.open(tmp_path, get_preset("tdmi-tiny")) for _ in range(2)]
    threads = [threading.Thread(target=c.weights) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(c.built) for c in caches) == [0, 1]
