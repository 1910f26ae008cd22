"""tdmi-export onnx / inspect: graph properties, metadata, ORT parity, every user error, the CLI."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tdmi.cli.common import run_app
from tdmi.cli.export import app
from tdmi.errors import BackendUnavailableError, CheckpointError, ConfigError, ExportError, TdmiError
from tdmi.eval.metrics import compare_heatmaps
from tdmi.export import ExportResult, export_onnx, inspect, read_metadata, run_onnx
from tdmi.export.onnx_export import example_clips
from tdmi.model import TDMI, get_preset, save_checkpoint
from tdmi.spec.joints import POSETRACK_JOINTS

PRESET = "tdmi-tiny"
pytestmark = pytest.mark.filterwarnings("ignore:no checkpoint given")


def _flat(text: str) -> str:
    """Rich wraps long lines at the console width; compare text with single spaces."""
    return " ".join(text.split())


@pytest.fixture(scope="session")
def tiny_model() -> TDMI:
    torch.manual_seed(123)
    model = TDMI(get_preset(PRESET)).eval()
    # Non-trivial BN statistics so the folded graph is really compared against PyTorch.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_model: TDMI) -> dict[str, ExportResult]:
    """tdmi-tiny exported once per session, with a fixed and a dynamic batch."""
    out = tmp_path_factory.mktemp("export")
    return {
        "static": export_onnx(PRESET, out / "tiny_b1.onnx", model=tiny_model, batch=1, progress=False),
        "dynamic": export_onnx(
            PRESET, out / "tiny_dyn.onnx", model=tiny_model, batch="dynamic", progress=False
        ),
    }


def _load(result: ExportResult) -> onnx.ModelProto:
    return onnx.load(str(result.path))


# ---------------------------------------------------------------------------------------- graph


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_graph_ops(exported: dict[str, ExportResult], kind: str) -> None:
    model = _load(exported[kind])
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["DeformConv"] == 4
    assert not {"Loop", "Scan", "If", "Dropout", "BatchNormalization"} & set(ops)
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    # Training-only branches (RDM's noisy gate, the MI estimator) are absent.
    assert not [n.name for n in model.graph.node if "noisy" in n.name or "mi_" in n.name]
    assert any(n.name.startswith("rdm/useful/") for n in model.graph.node)
    assert model.opset_import[0].version >= 19
    onnx.checker.check_model(model, full_check=True)


def test_difference_blocks_are_static_and_named(exported: dict[str, ExportResult]) -> None:
    model = _load(exported["dynamic"])
    consts = {i.name for i in model.graph.initializer}
    consts |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    t = get_preset(PRESET).num_frames
    for j in range(1, 5):
        block = [n for n in model.graph.node if n.name.startswith(f"tde/stage{j}/diff/")]
        ops = Counter(n.op_type for n in block)
        assert ops["Sub"] == t - 1 and ops["Concat"] == 1 and ops["Reshape"] == 2, (j, ops)
        slices = [n for n in block if n.op_type == "Slice"]
        assert slices and all(i in consts for n in slices for i in n.input[1:] if i)
        assert not {"Gather", "GatherElements", "Loop", "Scan", "If"} & set(ops)


def test_io_shapes(exported: dict[str, ExportResult]) -> None:
    cfg = get_preset(PRESET)
    h, w = cfg.input_size
    for kind, batch in (("static", 1), ("dynamic", "batch")):
        info = inspect(exported[kind].path)
        assert info["inputs"] == [{"name": "frames", "dtype": "float32", "shape": [batch, 3, 3, h, w]}]
        assert info["outputs"] == [
            {"name": "heatmaps", "dtype": "float32", "shape": [batch, 17, h // 4, w // 4]}
        ]


def test_single_self_contained_file(exported: dict[str, ExportResult]) -> None:
    path = exported["static"].path
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) == [
        "tiny_b1.onnx",
        "tiny_dyn.onnx",
    ]
    model = onnx.load(str(path), load_external_data=False)
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer)


def test_metadata(exported: dict[str, ExportResult]) -> None:
    from tdmi import __version__
    from tdmi.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    info = inspect(exported["dynamic"].path)
    assert info["config"] == get_preset(PRESET).to_dict()
    assert info["joints"] == list(POSETRACK_JOINTS)
    assert info["normalization"]["mean"] == pytest.approx(IMAGENET_MEAN.tolist())
    assert info["normalization"]["std"] == pytest.approx(IMAGENET_STD.tolist())
    assert info["normalization"]["color"] == "RGB"
    assert info["toolkit_version"] == f"tdmi-deploy {__version__}"
    assert (info["precision"], info["target"], info["variant"], info["fused"]) == (
        "fp32",
        "any",
        "fp32",
        False,
    )
    assert info["batch"] == "dynamic"
    assert read_metadata(_load(exported["static"]))["batch"] == 1


def test_dynamic_batch_parity_batch_1_and_3(exported: dict[str, ExportResult], tiny_model: TDMI) -> None:
    report = exported["dynamic"].verification
    assert report is not None and report.passed and report.batches == [1, 3]
    clips = example_clips(get_preset(PRESET), 3)
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(clips)).numpy()
    for b in (1, 3):
        out = run_onnx(exported["dynamic"].path, clips[:b])
        assert out.shape == (b, 17, 32, 24)
        err = compare_heatmaps(ref[:b], out)
        assert err.max_rel < 1e-4 and err.keypoint_agreement_exact == 1.0
    # The fixed-batch file runs clip by clip and agrees too.
    err = compare_heatmaps(ref, run_onnx(exported["static"].path, clips))
    assert err.max_rel < 1e-4


def test_compare_heatmaps_detects_a_moved_peak() -> None:
    ref = np.zeros((1, 2, 8, 8), np.float32)
    ref[0, 0, 2, 3] = ref[0, 1, 5, 5] = 1.0
    moved = ref.copy()
    moved[0, 1, 5, 5], moved[0, 1, 0, 0] = 0.0, 1.0
    err = compare_heatmaps(ref, moved)
    assert (
        err.keypoint_agreement == 0.5
        and err.max_abs == 1.0
        and err.max_keypoint_dist == pytest.approx(np.hypot(5, 5))
    )
    assert compare_heatmaps(ref, ref).max_abs == 0.0


def test_export_from_checkpoint(tmp_path: Path, tiny_model: TDMI) -> None:
    ckpt = save_checkpoint(tiny_model, tmp_path / "tiny.pt")
    result = export_onnx(None, tmp_path / "ck.onnx", checkpoint=ckpt, progress=False)
    assert result.weights == str(ckpt) and result.verification is not None and result.verification.passed
    assert inspect(result.path)["config"]["name"] == PRESET


# --------------------------------------------------------------------------------------- errors


def _assert_nothing_written(folder: Path) -> None:
    assert [p.name for p in folder.iterdir() if p.suffix in (".onnx", ".tmp") or ".onnx." in p.name] == []


def test_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        export_onnx("tdmi-nope", tmp_path / "m.onnx", progress=False)
    _assert_nothing_written(tmp_path)


def test_checkpoint_config_mismatch(tmp_path: Path, tiny_model: TDMI) -> None:
    ckpt = save_checkpoint(tiny_model, tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="contradicts"):
        export_onnx("tdmi-w32-256x192", tmp_path / "m.onnx", checkpoint=ckpt, progress=False)
    assert not (tmp_path / "m.onnx").exists()


def test_output_folder_missing_or_readonly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the one output-path policy (tdmi.utils.prepare_output): a missing parent folder is created
    export_onnx(PRESET, tmp_path / "missing" / "m.onnx", verify=False, simplify=False, progress=False)
    assert (tmp_path / "missing" / "m.onnx").is_file()
    with pytest.raises(ExportError, match="is a folder"):
        export_onnx(PRESET, tmp_path, progress=False)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions: make the check see what a user would
            monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != ro)
        with pytest.raises(ExportError, match="not writable"):
            export_onnx(PRESET, ro / "m.onnx", progress=False)
        assert not (ro / "m.onnx").exists()
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("opset", [17, 18])
def test_opset_too_low(tmp_path: Path, opset: int) -> None:
    with pytest.raises(ExportError, match="DeformConv needs opset >= 19"):
        export_onnx(PRESET, tmp_path / "m.onnx", opset=opset, progress=False)
    _assert_nothing_written(tmp_path)


def test_bad_batch(tmp_path: Path) -> None:
    for bad in (0, -2, "many"):
        with pytest.raises(ExportError, match="batch"):
            export_onnx(PRESET, tmp_path / "m.onnx", batch=bad, progress=False)  # type: ignore[arg-type]


def test_onnxruntime_too_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "__version__", "1.24.1")
    with pytest.raises(BackendUnavailableError, match=r"too old.*>= 1\.25"):
        export_onnx(PRESET, tmp_path / "m.onnx", progress=False)
    _assert_nothing_written(tmp_path)


def test_failed_verification_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tdmi.export.onnx_export as ox

    real = ox.run_onnx

    def skewed(path: object, clips: np.ndarray, **kw: object) -> np.ndarray:
        return real(path, clips) * 1.1  # type: ignore[arg-type]

    monkeypatch.setattr(ox, "run_onnx", skewed)
    with pytest.raises(ExportError, match="disagrees with PyTorch, nothing written"):
        export_onnx(PRESET, tmp_path / "m.onnx", progress=False)
    _assert_nothing_written(tmp_path)


def test_inspect_rejects_corrupt_empty_and_foreign(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf \xff\xff\xff")
    with pytest.raises(ExportError, match=r"not a (readable|usable) ONNX model"):
        inspect(bad)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ExportError, match="empty"):
        inspect(empty)
    with pytest.raises(ExportError, match="not found"):
        inspect(tmp_path / "nope.onnx")
    foreign = tmp_path / "foreign.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    with pytest.raises(ExportError, match="no tdmi metadata"):
        inspect(foreign)


def test_errors_are_tdmi_errors() -> None:
    assert issubclass(ExportError, TdmiError) and issubclass(BackendUnavailableError, TdmiError)


# ------------------------------------------------------------------------------------------ CLI


def test_cli_onnx_and_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.onnx"
    assert run_app(app, ["onnx", "--config", PRESET, "--output", str(out), "--batch", "dynamic"]) == 0
    text = _flat(capsys.readouterr().out)
    assert out.is_file() and "PASS" in text and "max abs" in text and "kpt agree" in text
    assert run_app(app, ["inspect", str(out)]) == 0
    text = _flat(capsys.readouterr().out)
    assert PRESET in text and "right_ankle" in text and "frames" in text
    assert run_app(app, ["inspect", str(out), "--json"]) == 0
    assert '"variant": "fp32"' in _flat(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--config", "tdmi-nope"], "unknown preset", 2),
        (["--config", PRESET, "--opset", "18"], "opset 18 is too low", 1),
        (["--config", PRESET, "--batch", "0"], "--batch must be", 2),
        (["--config", PRESET, "--precision", "fp8"], "Invalid value for '--precision'", 2),
        (["--config", PRESET, "--precision", "bf16"], "--precision must be fp32, fp16 or int8", 2),
        (
            ["--config", PRESET, "--precision", "fp16", "--target", "onnxruntime"],
            "FP16 is built for TensorRT",
            2,
        ),
    ],
)
def test_cli_errors_one_line_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str, code: int
) -> None:
    out = tmp_path / "m.onnx"
    assert run_app(app, ["onnx", "--output", str(out), *args]) == code
    err = _flat(capsys.readouterr().err)
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_cli_inspect_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx at all")
    assert run_app(app, ["inspect", str(bad)]) == 1
    assert "error:" in _flat(capsys.readouterr().err)


def test_int8_without_target_says_which_it_picked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "m.onnx"
    assert (
        run_app(app, ["onnx", "-o", str(out), "--config", PRESET, "--precision", "int8", "--opset", "18"])
        == 1
    )
    err = _flat(capsys.readouterr().err)
    assert "INT8 target: tensorrt (the default; --target onnxruntime for the fast CPU variant)" in err
    monkeypatch.setenv("COLUMNS", "300")  # the help text on one line
    assert run_app(app, ["onnx", "--help"]) == 0
    assert "tensorrt (the default)" in _flat(capsys.readouterr().out)
