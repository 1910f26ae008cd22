"""FP16 (AutoCast) and INT8 (ModelOpt for TensorRT, ORT for CPU) variants, calibration sets, their CLI."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tdmi.cli.common import run_app
from tdmi.cli.export import app
from tdmi.errors import DataError, ExportError
from tdmi.export import (
    CalibrationSet,
    ExportResult,
    PrecisionResult,
    build_calibration_set,
    convert_fp16,
    export_onnx,
    fuse_temporal_diff,
    inspect,
    quantize_int8,
    run_onnx,
)
from tdmi.export.calibration import CalibrationWarning
from tdmi.export.onnx_export import example_clips
from tdmi.export.precision import deformconv_type_conflicts, overflow_nodes, tensor_absmax
from tdmi.model import TDMI, get_preset

PRESET = "tdmi-tiny"
pytestmark = [
    pytest.mark.filterwarnings("ignore:no checkpoint given"),
    pytest.mark.filterwarnings("ignore:calibrating on the built-in sample clips"),
]


def _flat(text: str) -> str:
    """Rich wraps long lines at the console width; compare text with single spaces."""
    return " ".join(text.split())


@pytest.fixture(scope="session")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    torch.manual_seed(7)
    model = TDMI(get_preset(PRESET)).eval()
    out = tmp_path_factory.mktemp("precision") / "fp32.onnx"
    return export_onnx(PRESET, out, model=model, batch="dynamic", progress=False)


@pytest.fixture(scope="session")
def calib() -> CalibrationSet:
    return build_calibration_set(PRESET, None, num_clips=6)


@pytest.fixture(scope="session")
def variants(fp32: ExportResult, calib: CalibrationSet) -> dict[str, PrecisionResult]:
    folder = fp32.path.parent
    # ModelOpt first, then ORT: ModelOpt patches ORT's calibrators process-wide (we undo it).
    return {
        "fp16-tensorrt": convert_fp16(fp32.path, folder / "fp16.onnx", calib, progress=False),
        "int8-tensorrt": quantize_int8(
            fp32.path, folder / "int8_trt.onnx", calib, target="tensorrt", progress=False
        ),
        "int8-tensorrt-max": quantize_int8(
            fp32.path, folder / "int8_trt_max.onnx", calib, target="tensorrt", method="max", progress=False
        ),
        "int8-onnxruntime": quantize_int8(
            fp32.path, folder / "int8_ort.onnx", calib, target="onnxruntime", progress=False
        ),
    }


# ---------------------------------------------------------------------------------- calibration


def test_smoke_calibration_is_loud_and_roundtrips(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="SMOKE TESTS ONLY"):
        cs = build_calibration_set(PRESET, None, num_clips=3, seed=1)
    assert cs.smoke_only and cs.clips.shape == (3, 3, 3, 128, 96) and cs.clips.dtype == np.float32
    assert np.std(cs.clips[0] - cs.clips[1]) > 0.1  # different clips, not one repeated
    path = cs.save(tmp_path / "calib.npz")
    back = CalibrationSet.load(path)
    assert back.smoke_only and back.source == cs.source
    np.testing.assert_array_equal(back.clips, cs.clips)


def test_posetrack_calibration(posetrack18: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning) as caught:
        cs = build_calibration_set(PRESET, posetrack18, num_clips=4)
    said = [str(w.message) for w in caught]
    # Real, properly normalised frames pass the range and statistics checks; only the count is low.
    assert [m.split(":")[0] for m in said if "calibration clips from PoseTrack" in m] == [
        f"only 4 calibration clips from {cs.source}"
    ]
    # The fixture is a partial download: substituted neighbours are said, not silent.
    assert any("use the nearest frame on disk" in m and "--missing-frames nearest" in m for m in said)
    assert not cs.smoke_only and "PoseTrack" in cs.source
    assert cs.clips.shape == (4, 3, 3, 128, 96) and np.isfinite(cs.clips).all()
    assert CalibrationSet.load(cs.save(tmp_path / "pt.npz")).smoke_only is False


def test_calibration_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        CalibrationSet.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(DataError, match="no 'frames'"):
        CalibrationSet.load(other)
    with pytest.raises(DataError, match="not found"):
        build_calibration_set(PRESET, tmp_path / "missing", num_clips=2)
    cs = CalibrationSet(clips=np.zeros((2, 3, 3, 64, 48), np.float32), source="x", smoke_only=False)
    with pytest.raises(DataError, match="takes"):
        cs.check_fits(get_preset(PRESET))
    with pytest.raises(DataError, match=r"\[N, T, 3, H, W\]"):
        CalibrationSet(clips=np.zeros((2, 3, 64, 48), np.float32), source="x", smoke_only=False)


# ------------------------------------------------------------------------------------ variants


@pytest.mark.modelopt
def test_every_variant_runs_on_ort_and_reports_error(variants: dict[str, PrecisionResult]) -> None:
    clips = example_clips(get_preset(PRESET), 2)
    for name, res in variants.items():
        info = inspect(res.path)
        assert f"{info['precision']}-{info['target']}" == name.removesuffix("-max"), name
        assert info["inputs"][0]["dtype"] == "float32" and info["outputs"][0]["dtype"] == "float32"
        assert res.error.finite and res.error.num_clips >= 4
        # Random weights: loose bounds that still catch a broken conversion.
        bound = 0.01 if res.precision == "fp16" else 0.25
        assert res.error.max_rel < bound, (name, res.error)
        out = run_onnx(res.path, clips)  # the dynamic batch survives conversion
        assert out.shape == (2, 17, 32, 24) and np.isfinite(out).all()


@pytest.mark.modelopt
def test_fp16_graph(variants: dict[str, PrecisionResult]) -> None:
    res = variants["fp16-tensorrt"]
    model = onnx.load(str(res.path))
    dtypes = Counter(i.data_type for i in model.graph.initializer)
    assert dtypes[onnx.TensorProto.FLOAT16] > 0
    assert deformconv_type_conflicts(model) == []
    extra = inspect(res.path)["extra"]
    assert extra["kept_fp32_nodes"] == res.kept_fp32_nodes and extra["calibration"]["smoke_only"] is True


@pytest.mark.modelopt
def test_int8_tensorrt_graph(variants: dict[str, PrecisionResult]) -> None:
    for key, method in (("int8-tensorrt", "entropy"), ("int8-tensorrt-max", "max")):
        model = onnx.load(str(variants[key].path))
        ops = Counter(n.op_type for n in model.graph.node)
        assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0 and ops["DeformConv"] == 4
        assert inspect(variants[key].path)["extra"]["calibration"]["method"] == method
        # The temporal differences stay float (never between Q/DQ).
        assert not any(n.op_type == "QuantizeLinear" and "diff" in n.input[0] for n in model.graph.node)


@pytest.mark.modelopt
def test_int8_onnxruntime_graph(variants: dict[str, PrecisionResult]) -> None:
    model = onnx.load(str(variants["int8-onnxruntime"].path))
    inits = {i.name: i for i in model.graph.initializer}
    q_act = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert q_act
    zp_types = {inits[n.input[2]].data_type for n in q_act if len(n.input) > 2 and n.input[2] in inits}
    assert zp_types == {onnx.TensorProto.UINT8}  # unsigned activations
    conv_w_dq = [
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].data_type == onnx.TensorProto.INT8
    ]
    assert any(onnx.numpy_helper.to_array(inits[n.input[1]]).size > 1 for n in conv_w_dq)  # per-channel
    names = {n.name for n in model.graph.node}
    assert all(f"tde/stage{j}/diff/Sub_0" in names for j in range(1, 5))


@pytest.mark.modelopt
def test_int8_onnxruntime_keeps_the_sensitive_head_fp32(variants: dict[str, PrecisionResult]) -> None:
    model = onnx.load(str(variants["int8-onnxruntime"].path))
    inits = {i.name for i in model.graph.initializer}
    dq_out = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    quantized = {n.name for n in convs if any(i in dq_out for i in n.input if i not in inits)}
    head = {n.name for n in convs if n.name.startswith(("head/", "rdm/"))}
    assert head and not head & quantized  # keypoints come out of these: FP32
    assert any(n.startswith("backbone/") for n in quantized)  # the bulk of the compute is INT8
    assert set(variants["int8-onnxruntime"].kept_fp32_nodes) >= head


@pytest.mark.modelopt
def test_variants_then_fuse(variants: dict[str, PrecisionResult]) -> None:
    """Precision first, fusion after: the rewrite still finds all four blocks in FP16 and Q/DQ graphs."""
    for name in ("fp16-tensorrt", "int8-tensorrt"):
        model = onnx.load(str(variants[name].path))
        fused = fuse_temporal_diff(model, expected=4)
        clips = example_clips(get_preset(PRESET), 2)
        a, b = run_onnx(model, clips), run_onnx(fused, clips)
        assert np.abs(a - b).max() <= 1e-3 * max(np.abs(a).max(), 1e-6), name


@pytest.mark.modelopt
def test_precision_refuses_fused_or_converted_input(
    variants: dict[str, PrecisionResult], calib: CalibrationSet
) -> None:
    fp16 = variants["fp16-tensorrt"].path
    out = fp16.parent / "again.onnx"
    with pytest.raises(ExportError, match="already fp16"):
        convert_fp16(fp16, out, calib, progress=False)
    fused = fuse_temporal_diff(onnx.load(str(fp16)), expected=4)
    with pytest.raises(ExportError, match="already fused"):
        quantize_int8(fused, out, calib, target="onnxruntime", progress=False)
    with pytest.raises(ExportError, match="unknown INT8 target"):
        quantize_int8(fp16, out, calib, target="tflite", progress=False)  # type: ignore[arg-type]
    assert not out.exists()


def test_cli_int8_onnxruntime_with_saved_calibration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    npz = tmp_path / "calib.npz"
    assert run_app(app, ["calib", "--config", PRESET, "--num-clips", "4", "--output", str(npz)]) == 0
    assert "SMOKE TEST ONLY" in _flat(capsys.readouterr().out)
    out = tmp_path / "int8.onnx"
    args = ["onnx", "-c", PRESET, "-o", str(out), "--precision", "int8", "--target", "onnxruntime"]
    assert run_app(app, [*args, "--calib", str(npz), "--calib-method", "max"]) == 0
    text = _flat(capsys.readouterr().out)
    assert "int8-onnxruntime vs FP32" in text and "SMOKE TEST ONLY" in text
    assert inspect(out)["variant"] == "int8-onnxruntime"
    bad = tmp_path / "bad.onnx"
    assert run_app(app, [*args[:4], str(bad), *args[5:], "--calib", str(tmp_path / "nope.npz")]) == 1
    assert "nope.npz does not exist" in _flat(capsys.readouterr().err) and not bad.exists()


@pytest.mark.modelopt
def test_fp16_keeps_overflowing_nodes_fp32(fp32: ExportResult, calib: CalibrationSet, tmp_path: Path) -> None:
    """Overflow is decided on the calibration clips: with a tiny range limit, those nodes stay FP32."""
    model = onnx.load(str(fp32.path))
    absmax = tensor_absmax(model, calib.clips)
    limit = float(np.percentile([v for v in absmax.values() if v > 0], 90))
    expected = set(overflow_nodes(model, absmax, limit))
    assert expected and len(expected) < len(model.graph.node)
    res = convert_fp16(fp32.path, tmp_path / "fp16_limited.onnx", calib, data_max=limit, progress=False)
    kept = set(res.kept_fp32_nodes)
    produces_float = {n.name for n in model.graph.node if n.op_type not in ("Shape", "Constant")}
    assert expected & produces_float <= kept
    meta = inspect(res.path)["extra"]["autocast"]
    assert set(meta["overflow_screened_fp32"]) == expected and meta["clips_screened"] == calib.num_clips
    assert res.error.finite and res.error.max_rel < 0.01


def _real_like(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Normalised clips and the raw 0..255 RGB pixels they came from."""
    from tdmi.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(n, 3, 3, 32, 24)).astype(np.uint8)
    norm = (raw / 255.0 - IMAGENET_MEAN[None, None, :, None, None]) / IMAGENET_STD[None, None, :, None, None]
    return norm.astype(np.float32), raw


def test_calibration_in_the_wrong_range_is_refused_or_flagged(tmp_path: Path) -> None:
    """Raw 0-255 clips gave an INT8 graph agreeing on 1.5 % of keypoints, without a word."""
    norm, raw = _real_like()
    with pytest.raises(DataError, match="are uint8 \\(raw pixels\\?\\)"):
        CalibrationSet(clips=raw, source="raw.npz", smoke_only=False)
    npz = tmp_path / "raw.npz"
    np.savez(npz, frames=raw)
    with pytest.raises(DataError, match="uint8"):
        CalibrationSet.load(npz)
    with pytest.raises(DataError, match="look like raw pixel values"):
        CalibrationSet(clips=raw.astype(np.float32), source="x", smoke_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CalibrationSet(clips=np.repeat(norm, 6, axis=0), source="ok", smoke_only=False)  # 18 clips: quiet
    with pytest.warns(CalibrationWarning, match="per-channel statistics unlike normalised frames"):
        CalibrationSet(clips=(raw / 255.0).astype(np.float32).repeat(6, 0), source="x", smoke_only=False)
    shifted = norm.copy()
    shifted[:, :, 0] += 3.0  # mean subtracted twice in one channel, say
    with pytest.warns(CalibrationWarning, match="outside the normalised range"):
        CalibrationSet(clips=shifted.repeat(6, 0), source="x", smoke_only=False)
    with pytest.warns(CalibrationWarning, match="only 3 calibration clips"):
        CalibrationSet(clips=norm, source="x", smoke_only=False)


def test_without_modelopt_cpu_int8_works_and_fp16_names_the_extra(
    fp32: ExportResult, calib: CalibrationSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from tdmi.errors import BackendUnavailableError

    for name in [m for m in sys.modules if m == "modelopt" or m.startswith("modelopt.")] + ["modelopt"]:
        monkeypatch.setitem(sys.modules, name, None)  # as on an install without the extra
    res = quantize_int8(fp32.path, tmp_path / "cpu.onnx", calib, target="onnxruntime", progress=False)
    assert res.path.is_file() and res.target == "onnxruntime"
    with pytest.raises(BackendUnavailableError, match=r"pip install 'tdmi-deploy\[modelopt\]'"):
        convert_fp16(fp32.path, tmp_path / "fp16.onnx", calib, progress=False)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'tdmi-deploy\[modelopt\]'"):
        quantize_int8(fp32.path, tmp_path / "trt.onnx", calib, target="tensorrt", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu.onnx"]


def test_modelopt_and_lief_are_an_extra_not_a_requirement() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].split("[")[0] for d in project["dependencies"]]
    assert "nvidia-modelopt" not in names and "lief" not in names
    assert any(d.startswith("nvidia-modelopt") for d in project["optional-dependencies"]["modelopt"])
