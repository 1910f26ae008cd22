"""OpenVINO: the backend, IR export (FP32 / BF16 hint / NNCF INT8), the INT8 search target, bench, Triton."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

ov = pytest.importorskip("openvino", reason="needs the [openvino] extra: pip install 'tdmi-deploy[openvino]'")

from tdmi import runtime  # noqa: E402
from tdmi.cli.common import run_app  # noqa: E402
from tdmi.errors import ConfigError, DataError, ExportError, TdmiError  # noqa: E402
from tdmi.export import CalibrationSet, ExportResult, build_calibration_set, export_onnx  # noqa: E402
from tdmi.export.int8_recipes import Int8Recipe, check_op_types, ov_ignored_types  # noqa: E402
from tdmi.export.metadata import write_metadata  # noqa: E402
from tdmi.model import TDMI, get_preset  # noqa: E402

PRESET = "tdmi-tiny"
pytestmark = [
    pytest.mark.filterwarnings("ignore:no checkpoint given"),
    pytest.mark.filterwarnings("ignore:calibrating on the built-in sample clips"),
]


def _needs_nncf() -> None:
    pytest.importorskip("nncf", reason="INT8 needs the [openvino-int8] extra (NNCF)")


@pytest.fixture(scope="module")
def decomposed(tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    torch.manual_seed(5)
    cfg = get_preset(PRESET).replace(deform_conv="decomposed")
    model = TDMI(cfg).eval()
    out = tmp_path_factory.mktemp("ov") / "fp32.onnx"
    return export_onnx(cfg, out, model=model, batch=1, verify=False, progress=False)


@pytest.fixture(scope="module")
def calib() -> CalibrationSet:
    return build_calibration_set(PRESET, None, num_clips=2)


def _clips(n: int, seed: int = 0) -> np.ndarray:
    cfg = get_preset(PRESET)
    h, w = cfg.input_size
    return np.random.default_rng(seed).standard_normal((n, cfg.num_frames, 3, h, w)).astype(np.float32)


def test_backend_matches_ort_fp32_and_keeps_the_predictor_contract(decomposed: ExportResult) -> None:
    x = _clips(3)  # the graph takes batch 1: three clips run as three chunks
    with runtime.load(decomposed.path) as ort_p:
        ref = ort_p.predict(x)
    with runtime.load(decomposed.path, backend="openvino", threads=1, inference_precision="fp32") as p:
        assert p.backend == "openvino" and p.precision == "fp32" and p.inference_precision == "fp32"
        assert (p.min_batch, p.max_batch) == (1, 1)
        got = p.predict(x)
        assert got.shape == ref.shape and got.dtype == np.float32
        assert float(np.abs(got - ref).max()) < 1e-4
        assert torch.allclose(p.predict(torch.from_numpy(x[:1])), torch.from_numpy(got[:1]))
        bad = x[:2].copy()
        bad[1, 0, 0, 0, 0] = np.nan
        with pytest.raises(DataError, match="NaN"):
            p.predict(bad)
    with pytest.raises(TdmiError, match="closed"):
        p.predict(x[:1])
    # the default is OpenVINO's own for this CPU, read back from the compiled model, never assumed
    with runtime.load(decomposed.path, backend="openvino") as p:
        core = ov.Core()
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        assert p.precision == ("bf16" if "BF16" in caps else "fp32")
        assert p.describe()["requested"] == "default"
    with pytest.raises(ConfigError, match="inference precision"):
        runtime.load(decomposed.path, backend="openvino", inference_precision="int4")
    with pytest.raises(ConfigError, match="CPU only"):
        runtime.load(decomposed.path, backend="openvino", device="cuda")


def test_native_deform_conv_is_refused_naming_the_decomposed_export(tmp_path: Path) -> None:
    cfg = get_preset(PRESET)
    assert cfg.deform_conv == "native"
    x = onnx.helper.make_tensor_value_info("frames", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    w = onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [3, 3, 3, 3])
    off = onnx.helper.make_tensor_value_info("off", onnx.TensorProto.FLOAT, [1, 18, 6, 6])
    y = onnx.helper.make_tensor_value_info("heatmaps", onnx.TensorProto.FLOAT, None)
    node = onnx.helper.make_node("DeformConv", ["frames", "w", "off"], ["heatmaps"], kernel_shape=[3, 3])
    graph = onnx.helper.make_graph([node], "g", [x, w, off], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 19)])
    write_metadata(model, cfg)
    path = tmp_path / "native.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ExportError, match="tdmi-export onnx --deform-conv decomposed") as e:
        runtime.load(path, backend="openvino")
    assert "\n" not in str(e.value)


def test_ir_carries_the_metadata_and_the_recorded_precision(decomposed: ExportResult, tmp_path: Path) -> None:
    from tdmi.export.openvino_export import write_ir

    fp32 = write_ir(decomposed.path, tmp_path / "m.xml", "fp32")
    assert fp32.error is not None and fp32.error.max_abs < 1e-4
    assert (tmp_path / "m.bin").is_file()
    assert runtime.infer_backend(tmp_path / "m.xml") == "openvino"
    with runtime.load(tmp_path / "m.xml") as p:
        assert p.config.to_dict() == decomposed.config.to_dict()
        assert p.metadata["target"] == "openvino" and p.metadata["precision"] == "fp32"
        assert p.precision == "fp32"  # recorded f32 hint: FP32 even where the CPU would pick BF16
    write_ir(decomposed.path, tmp_path / "b.xml", "bf16")
    with runtime.load(tmp_path / "b.xml") as p:
        assert p.precision_requested == "bf16" and p.metadata["precision"] == "bf16"
        assert p.precision in ("bf16", "fp32")  # fp32 only on a CPU without BF16
    with runtime.load(tmp_path / "b.xml", inference_precision="fp32") as p:  # the caller overrides it
        assert p.precision == "fp32"
    with pytest.raises(ExportError, match=r"\.xml"):
        write_ir(decomposed.path, tmp_path / "m.onnx", "fp32")
    assert not (tmp_path / "m.onnx").exists()


def test_int8_ir_keeps_the_recipe_regions_out_of_nncf(
    decomposed: ExportResult, calib: CalibrationSet, tmp_path: Path
) -> None:
    _needs_nncf()
    from tdmi.export.openvino_export import write_ir

    def fake_quantizes(path: Path) -> list[str]:
        model = ov.Core().read_model(str(path))
        return [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]

    everything = Int8Recipe(target="openvino", calibration="max", fp32_regions=(), op_types=())
    kept = Int8Recipe(target="openvino", calibration="percentile", fp32_regions=("head", "rdm"), op_types=())
    a = write_ir(decomposed.path, tmp_path / "all.xml", "int8", calib=calib, recipe=everything)
    b = write_ir(decomposed.path, tmp_path / "kept.xml", "int8", calib=calib, recipe=kept)
    assert b.ignored_nodes > a.ignored_nodes > 0  # temporal differences are always left alone
    assert len(fake_quantizes(tmp_path / "kept.xml")) < len(fake_quantizes(tmp_path / "all.xml"))
    with runtime.load(tmp_path / "kept.xml") as p:
        assert p.precision.startswith("int8+")
        assert p.metadata["extra"]["recipe"]["fp32_regions"] == ["head", "rdm"]
        assert p.metadata["extra"]["calibration"]["smoke_only"] is True
        assert np.isfinite(p.predict(_clips(1))).all()


def test_openvino_recipe_rules() -> None:
    assert "Convolution" not in ov_ignored_types(("Conv",)) and "Add" in ov_ignored_types(("Conv",))
    assert ov_ignored_types(()) == []
    with pytest.raises(ExportError, match="NNCF cannot be limited"):
        check_op_types(("Softmax",), "openvino")
    with pytest.raises(ExportError, match="not available for openvino"):
        Int8Recipe(target="openvino", calibration="entropy")
    with pytest.raises(ExportError, match="A16W8"):
        Int8Recipe(target="openvino", calibration="max", activations="int16")
    label = Int8Recipe(target="openvino", calibration="max", op_types=()).label()
    assert "NNCF default" in label and "per-channel" in label


def test_search_targets_openvino(decomposed: ExportResult, calib: CalibrationSet) -> None:
    _needs_nncf()
    from tdmi.eval.synthetic import synthetic_set
    from tdmi.export.int8_search import search

    data = synthetic_set(decomposed.config, 2)
    found = search(
        decomposed.path,
        calib,
        data,
        target="openvino",
        max_drop=100,
        min_speedup=0,
        calibrations=["max"],
        timing_rounds=1,
    )
    assert found.target == "openvino" and found.chosen is not None
    recipes = [c.recipe for c in found.candidates]
    assert all(r["target"] == "openvino" for r in recipes)
    assert {r["per_channel"] for r in recipes} == {True, False}  # per-tensor weights tried too
    assert all(c.speedup is not None and c.speedup > 0 for c in found.candidates)  # timed on OpenVINO


def test_export_openvino_cli(
    decomposed: ExportResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tdmi.cli.export import app

    out = tmp_path / "cli.xml"
    rc = run_app(app, ["openvino", "--onnx", str(decomposed.path), "--precision", "bf16", "-o", str(out),
                       "--json", str(tmp_path / "r.json")])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "inference precision" in captured.out and out.is_file() and out.with_suffix(".bin").is_file()
    assert json.loads((tmp_path / "r.json").read_text())["precision"] == "bf16"
    rc = run_app(app, ["openvino", "--onnx", str(decomposed.path), "--precision", "int4", "-o", str(out)])
    assert rc == 2 and "--precision" in capsys.readouterr().err
    rc = run_app(app, ["openvino", "--onnx", str(decomposed.path), "--max-drop", "1", "-o", str(out)])
    assert rc == 2 and "int8 only" in capsys.readouterr().err


def test_split_pair_runs_on_openvino(tmp_path: Path) -> None:
    from tdmi.export.split_export import export_split_onnx
    from tdmi.runtime.features import OnnxFramePredictor, OpenVINOFramePredictor

    torch.manual_seed(1)
    cfg = get_preset(PRESET).replace(deform_conv="decomposed")
    export_split_onnx(cfg, tmp_path / "s.onnx", model=TDMI(cfg).eval(), verify=False, progress=False)
    h, w = cfg.input_size
    crops = _clips(1)[0]
    ort_fp, ov_fp = OnnxFramePredictor(tmp_path / "s.onnx"), OpenVINOFramePredictor(tmp_path / "s.onnx")
    ov32 = OpenVINOFramePredictor(tmp_path / "s.onnx", inference_precision="fp32")
    assert ov32.inference_precision == "fp32" and ov_fp.backend == "openvino"
    feats = ort_fp.frame_features(crops)
    for a, b in zip(feats, ov32.frame_features(crops), strict=True):
        assert a.shape == b.shape and float(np.abs(a - b).max()) < 1e-4
    stacks = [np.stack([f] * cfg.num_frames, axis=1)[:1] for f in feats]
    assert float(np.abs(ort_fp.head(stacks) - ov32.head(stacks)).max()) < 1e-4
    assert crops.shape[-2:] == (h, w)


def test_bench_default_job_and_report_name_the_cpu_and_the_best_variant() -> None:
    from tdmi.benchmarks.report import LatencyRow, best_cpu_variant
    from tdmi.benchmarks.task_accuracy import TaskAccuracyRow
    from tdmi.benchmarks.variants import OPENVINO_VARIANTS, variant_set
    from tdmi.plugins.machine import cpu_bf16_isa

    assert set(OPENVINO_VARIANTS) <= set(variant_set("default"))
    assert variant_set("ov-int8,ort-fp32") == ["ov-int8", "ort-fp32"]
    assert cpu_bf16_isa("flags\t: fpu avx512f avx512_bf16 avx512_vnni\n") == ["avx512_bf16"]
    assert cpu_bf16_isa("flags\t: fpu avx2\n") == []
    rows = [
        LatencyRow("torch", "torch", "fp32", "cpu", 1, "reference", p50_ms=100.0),
        LatencyRow("ort-fp32", "onnxruntime", "fp32", "cpu", 1, "ok", p50_ms=80.0, speedup=1.25),
        LatencyRow("ov-bf16", "openvino", "bf16", "cpu", 1, "ok", p50_ms=40.0, speedup=2.5),
        LatencyRow("ov-int8", "openvino", "int8+bf16", "cpu", 1, "ok", p50_ms=30.0, speedup=3.3),
    ]
    assert best_cpu_variant(rows, None)["name"] == "ov-int8"
    task = [
        TaskAccuracyRow("torch", "fp32", "reference", drop_pck=None),
        TaskAccuracyRow("ort-fp32", "fp32", "ok", drop_pck=0.0),
        TaskAccuracyRow("ov-bf16", "bf16", "ok", drop_pck=0.05),
        TaskAccuracyRow("ov-int8", "int8+bf16", "ok", drop_pck=0.9),  # fastest, but outside the budget
    ]
    best = best_cpu_variant(rows, task)
    assert best["name"] == "ov-bf16" and "PCK drop +0.05" in best["text"]


@pytest.mark.serve
def test_triton_repository_offers_the_openvino_backend(decomposed: ExportResult, tmp_path: Path) -> None:
    from tdmi.export.openvino_export import write_ir
    from tdmi.serve import ServeConfig, write_repository
    from tdmi.serve.repository import artifact_from_openvino, heatmap_config

    write_ir(decomposed.path, tmp_path / "m.xml", "fp32")
    art = artifact_from_openvino(tmp_path / "m.xml")
    assert art.platform == "openvino" and art.filename == "model.xml" and art.batch == 1
    with pytest.raises(ConfigError, match="tdmi-export openvino --batch dynamic"):
        write_repository(tmp_path / "repo", art, ServeConfig(kind="cpu"))
    msg = heatmap_config(art, ServeConfig(kind="gpu"), "platform")
    assert msg.backend == "openvino" and not msg.platform and msg.default_model_filename == "model.xml"
    assert msg.instance_group[0].kind == msg.instance_group[0].Kind.KIND_CPU  # OpenVINO serves on CPUs
    import dataclasses

    repo = write_repository(tmp_path / "repo", dataclasses.replace(art, batch=None, max_batch=None))
    version = repo / "tdmi" / "1"
    assert (version / "model.xml").is_file() and (version / "model.bin").is_file()
    assert 'backend: "openvino"' in (repo / "tdmi" / "config.pbtxt").read_text()
