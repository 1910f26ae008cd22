"""INT8 recipes: our histogram calibration reaches ORT, regions kept FP32, the sensitivity/search CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tdmi.cli.common import run_app
from tdmi.cli.export import app
from tdmi.errors import ExportError
from tdmi.export import (
    CalibrationSet,
    ExportResult,
    build_calibration_set,
    export_onnx,
    inspect,
    quantize_int8,
)
from tdmi.export.int8_recipes import (
    ActivationStats,
    Int8Recipe,
    collect_stats,
    entropy_threshold,
    parse_op_types,
    percentile_threshold,
    quantizable_regions,
    ranges_from_stats,
    region_of,
)
from tdmi.export.precision import default_recipe
from tdmi.model import TDMI, get_preset

PRESET = "tdmi-tiny"
pytestmark = [
    pytest.mark.filterwarnings("ignore:no checkpoint given"),
    pytest.mark.filterwarnings("ignore:calibrating on the built-in sample clips"),
]


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    torch.manual_seed(3)
    model = TDMI(get_preset(PRESET)).eval()
    out = tmp_path_factory.mktemp("int8") / "fp32.onnx"
    return export_onnx(PRESET, out, model=model, batch=1, progress=False)


@pytest.fixture(scope="module")
def calib() -> CalibrationSet:
    return build_calibration_set(PRESET, None, num_clips=3)


@pytest.fixture(scope="module")
def stats(fp32: ExportResult, calib: CalibrationSet) -> ActivationStats:
    return collect_stats(onnx.load(str(fp32.path)), calib.clips)


def test_thresholds_on_hand_made_histograms() -> None:
    hist = np.zeros(2048)
    hist[:100] = 1000.0  # the bulk within the first 100 bins ...
    hist[2047] = 1.0  # ... and one far outlier
    assert percentile_threshold(hist, 2048.0, 100.0) == 2048.0
    assert percentile_threshold(hist, 2048.0, 99.9) == pytest.approx(100.0)
    # a heavy-tailed (Laplace-like) activation plus one outlier: the tail is clipped, the bulk kept
    laplace = np.round(1e6 * np.exp(-np.arange(2048) / 40.0))
    laplace[2047] += 1
    assert 200.0 <= entropy_threshold(laplace, 2048.0) < 1024.0
    # a distribution spread over the whole range loses least with the whole range
    assert entropy_threshold(np.round(1e6 * np.exp(-np.arange(2048) / 400.0)), 1.0) == 1.0


def test_ranges_follow_the_method(stats: ActivationStats) -> None:
    exact = ranges_from_stats(stats, "max")
    pct = ranges_from_stats(stats, "percentile", 99.0)
    ent = ranges_from_stats(stats, "entropy")
    assert exact.keys() == pct.keys() == ent.keys() and "frames" in exact
    for name, (lo, hi) in exact.items():
        assert lo <= 0.0 <= hi
        assert lo <= pct[name][0] <= 0.0 <= pct[name][1] <= hi
        assert lo <= ent[name][0] <= 0.0 <= ent[name][1] <= hi
    assert any(pct[n] != exact[n] for n in exact)  # percentile really clips somewhere


def test_regions_name_the_blocks(fp32: ExportResult) -> None:
    assert region_of("backbone/stage3/0/branches/1/Conv_0") == "backbone/stage3"
    assert region_of("backbone/transition2/2/Conv_0") == "backbone/transitions"
    assert region_of("backbone/conv1/Conv_0") == "backbone/stem"
    assert region_of("tde/cascade/1/Conv_0") == "tde/cascade"
    assert region_of("head/final_layer/Conv_0") == "head" and region_of("Reshape_0") is None
    assert region_of("x/y", "node") == "x/y"
    regions = quantizable_regions(onnx.load(str(fp32.path)))
    assert {"head", "rdm", "tde/cascade", "tde/stage1", "backbone/stage2"} <= set(regions)
    assert not any("/diff/" in n for nodes in regions.values() for n in nodes)


def _scales(model: onnx.ModelProto) -> dict[str, float]:
    """Activation tensor -> the scale of the QuantizeLinear that quantizes it."""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        n.input[0]: float(inits[n.input[1]])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits and inits[n.input[1]].size == 1
    }


def test_our_ranges_are_the_ones_onnxruntime_uses(
    fp32: ExportResult, calib: CalibrationSet, stats: ActivationStats, tmp_path: Path
) -> None:
    recipe = Int8Recipe(calibration="percentile", percentile=99.0, fp32_regions=("head", "rdm"))
    res = quantize_int8(
        fp32.path, tmp_path / "p.onnx", calib, target="onnxruntime", recipe=recipe, stats=stats
    )
    ranges = ranges_from_stats(stats, "percentile", 99.0)
    scales = _scales(onnx.load(str(res.path)))
    assert scales
    for tensor, scale in scales.items():
        lo, hi = ranges[tensor]
        if hi == lo:  # an all-zero tensor: ORT falls back to scale 1
            continue
        assert scale == pytest.approx((hi - lo) / 255.0, rel=1e-5), tensor
    extra = inspect(res.path)["extra"]
    assert "tdmi histograms" in extra["calibration"]["calibrator"]
    assert extra["recipe"]["calibration"] == "percentile"
    assert set(res.kept_fp32_nodes) >= {n for n in res.kept_fp32_nodes if n.startswith("head/")}
    assert any(n.startswith("head/") for n in res.kept_fp32_nodes)


def test_per_tensor_and_a16w8(
    fp32: ExportResult, calib: CalibrationSet, stats: ActivationStats, tmp_path: Path
) -> None:
    recipe = Int8Recipe(per_channel=False, activations="int16", fp32_regions=())
    res = quantize_int8(
        fp32.path, tmp_path / "a16.onnx", calib, target="onnxruntime", recipe=recipe, stats=stats
    )
    model = onnx.load(str(res.path))
    inits = {i.name: i for i in model.graph.initializer}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    zp = {inits[n.input[2]].data_type for n in qs if len(n.input) > 2 and n.input[2] in inits}
    assert zp == {onnx.TensorProto.UINT16}
    w_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].data_type == onnx.TensorProto.INT8]  # fmt: skip
    assert w_dq and all(onnx.numpy_helper.to_array(inits[n.input[1]]).size == 1 for n in w_dq)
    assert not any(n.startswith(("head/", "backbone/")) for n in res.kept_fp32_nodes if "Conv" in n)


def test_bad_recipes_are_clear() -> None:
    with pytest.raises(ExportError, match="not available for tensorrt"):
        Int8Recipe(target="tensorrt", calibration="percentile")
    with pytest.raises(ExportError, match="activations"):
        Int8Recipe(activations="int4")
    with pytest.raises(ExportError, match="unknown ONNX op types to quantize: Convv"):
        Int8Recipe(target="tensorrt", calibration="max", op_types=("Convv",))
    with pytest.raises(ExportError, match="needs op types"):
        Int8Recipe(op_types=())
    r = Int8Recipe(fp32_regions=("head",))
    assert Int8Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert parse_op_types(None) is None and parse_op_types("all") == ()
    assert parse_op_types("Conv, Add") == ("Conv", "Add")
    with pytest.raises(ExportError, match="no op type"):
        parse_op_types(",,")  # not silently "all"
    trt = Int8Recipe(target="tensorrt", calibration="max", fp32_regions=(), op_types=())
    assert "ops: ModelOpt default" in trt.label() and "ops:" not in r.label()


@pytest.mark.modelopt
def test_tensorrt_search_tries_convolutions_only_when_modelopts_set_misses(
    fp32: ExportResult, calib: CalibrationSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ModelOpt's Q/DQ on the fuse sums can cost the budget: convolutions only is the next base.

    The graphs are real ModelOpt graphs scored on real clips; the evaluator adds 5 points to the
    drop of graphs built with ModelOpt's op-type set, so the rule is exercised whatever tiny's
    random weights score.
    """
    from tdmi.eval.synthetic import synthetic_set
    from tdmi.export import int8_search
    from tdmi.export.int8_recipes import QUANTIZED_OPS

    real_score = int8_search._Evaluator.score

    def score(self: object, path: Path, recipe: Int8Recipe, timed: bool) -> object:
        res = real_score(self, path, recipe, timed)  # type: ignore[arg-type]
        if not recipe.op_types:
            res.drop_pck += 5.0
        return res

    monkeypatch.setattr(int8_search._Evaluator, "score", score)
    monkeypatch.setattr(int8_search, "sensitivity", lambda *a, **k: [])  # one step at a time
    data = synthetic_set(get_preset(PRESET), 2)
    found = int8_search.search(fp32.path, calib, data, target="tensorrt", max_drop=1.0, calibrations=["max"])
    ops = [tuple(c.recipe["op_types"]) for c in found.candidates]
    assert ops == [(), QUANTIZED_OPS]
    assert all(c.speedup is None for c in found.candidates)  # accuracy only: ORT CPU says nothing of TensorRT
    convs = found.candidates[1]
    assert "ops: Conv,Gemm,MatMul" in convs.label
    if convs.drop_pck <= 1.0:
        assert found.chosen is convs
    # op types given: no fallback, the caller's choice is the base
    fixed = int8_search.search(
        fp32.path, calib, data, target="tensorrt", max_drop=1.0, calibrations=["max"], op_types=()
    )
    assert [tuple(c.recipe["op_types"]) for c in fixed.candidates] == [()]


@pytest.mark.modelopt
def test_export_op_types_reach_modelopt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "conv.onnx"
    args = ["onnx", "--config", PRESET, "--precision", "int8", "--target", "tensorrt", "--no-verify"]
    rc = run_app(app, [*args, "-o", str(out), "--op-types", "Conv", "--calib-method", "max"])
    assert rc == 0, capsys.readouterr().err
    model = onnx.load(str(out))
    dq_out = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    fed = {n.op_type for n in model.graph.node if any(i in dq_out for i in n.input)}
    assert "Conv" in fed and "Resize" not in fed  # ModelOpt's default set quantizes Resize too
    assert inspect(out)["extra"]["recipe"]["op_types"] == ["Conv"]
    bad = tmp_path / "bad.onnx"
    rc = run_app(app, [*args, "-o", str(bad), "--op-types", "Convv"])
    assert rc != 0 and "Convv" in capsys.readouterr().err and not bad.exists()
    rc = run_app(app, ["onnx", "--config", PRESET, "-o", str(bad), "--op-types", "Conv"])
    assert rc != 0 and "--op-types applies to --precision int8" in capsys.readouterr().err


def test_sensitivity_and_budget_cli(
    fp32: ExportResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sens.json"
    args = ["int8-sensitivity", str(fp32.path), "--calib-clips", "2", "--eval-clips", "4", "--rounds", "1"]
    rc = run_app(app, [*args, "--max-drop", "100", "--min-speedup", "0", "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "one region quantized at a time" in captured.out
    report = json.loads(out.read_text())
    regions = {r["region"] for r in report["sensitivity"]}
    assert {"head", "rdm", "tde/cascade"} <= regions
    drops = [r["drop_pck"] for r in report["sensitivity"]]
    assert drops == sorted(drops, reverse=True)
    assert all(r["speedup"] > 0 for r in report["sensitivity"])
    search = report["search"]
    assert search["chosen"] is not None and search["chosen"]["drop_pck"] <= 100
    assert {c["recipe"]["calibration"] for c in search["candidates"]} >= {"max", "percentile", "entropy"}
    default = default_recipe("onnxruntime").to_dict()
    assert any(c["recipe"] == default for c in search["candidates"])  # the incumbent is always measured
    # a budget nothing can meet: one line, nothing written
    bad = tmp_path / "never.onnx"
    rc = run_app(app, ["onnx", "-o", str(bad), "--config", PRESET, "--precision", "int8",
                       "--target", "onnxruntime", "--max-drop", "-1"])  # fmt: skip
    assert rc != 0 and "--max-drop" in capsys.readouterr().err and not bad.exists()
    rc = run_app(app, ["int8-sensitivity", str(fp32.path), "--granularity", "layer"])
    assert rc != 0 and "granularity" in capsys.readouterr().err


def test_search_never_chooses_a_recipe_slower_than_asked(fp32: ExportResult, calib: CalibrationSet) -> None:
    """A16W8 fits budgets easily but runs slower than FP32 on CPUs: fitting is not enough to be chosen."""
    from tdmi.eval.synthetic import synthetic_set
    from tdmi.export.int8_search import search

    data = synthetic_set(get_preset(PRESET), 2)
    found = search(
        fp32.path, calib, data, max_drop=100, min_speedup=1000, calibrations=["percentile"], timing_rounds=1
    )
    assert all(c.meets_budget for c in found.candidates) and found.chosen is None
    assert "none runs at 1000x FP32 or faster" in found.note
    with pytest.raises(ExportError, match="min-speedup"):
        search(fp32.path, calib, data, min_speedup=-1)


def test_per_clip_script_splits_clips_by_fp32_outcome(fp32: ExportResult, tmp_path: Path) -> None:
    """scripts/int8_per_clip.py: the evidence that explains an INT8 graph scoring above FP32."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "int8_per_clip.py"
    out = tmp_path / "per-clip.json"
    cmd = [sys.executable, str(script), str(fp32.path), "--clips", "4", "--calib-clips", "2"]
    cmd += ["--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert "fp32" in rows and len(rows) == 5  # FP32 and the four recipes
    fp32_clips = np.asarray(rows["fp32"]["per_clip_pck"])
    assert report["fp32_failed_clips"] == int((fp32_clips < 0.5).sum())
    for row in rows.values():
        assert len(row["per_clip_pck"]) == 4
        groups = [row[k] for k in ("pck_fp32_good", "pck_fp32_failed") if row[k] is not None]
        assert groups  # every clip is in one of the two groups
        assert min(groups) - 1e-9 <= row["pck_all"] <= max(groups) + 1e-9


def test_per_clip_script_scores_a_given_graph_like_fp32(fp32: ExportResult, tmp_path: Path) -> None:
    """--graph with the FP32 file itself must reproduce the FP32 row clip for clip."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "int8_per_clip.py"
    out = tmp_path / "per-clip.json"
    cmd = [sys.executable, str(script), str(fp32.path), "--clips", "3", "--skip-recipes"]
    cmd += ["--graph", str(fp32.path), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"fp32", fp32.path.name}
    assert rows["fp32"]["per_clip_pck"] == rows[fp32.path.name]["per_clip_pck"]
