"""Bad option values are usage errors (exit 2) that name the option, on every command; a foreign graph
carrying tdmi metadata is one clear line."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import typer
from onnx import TensorProto, helper

from tdmi.cli import bench, build_engine, export, infer, serve, train
from tdmi.cli import eval as eval_cli
from tdmi.cli.common import options_of_config, run_app
from tdmi.errors import ConfigError, ExportError
from tdmi.export.metadata import write_metadata
from tdmi.spec.config import get_preset
from tdmi.train import TrainConfig


def _run(app: typer.Typer, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = run_app(app, argv, prog_name="tdmi-x")
    return rc, " ".join(capsys.readouterr().err.split())  # rich/click wrap long lines


@pytest.mark.parametrize(
    ("app", "argv"),
    [
        (export.app, ["onnx", "--config", "nope", "-o", "x.onnx"]),
        (export.app, ["calib", "--config", "nope", "--data", "d", "-o", "c.npz"]),
        (export.app, ["triton", "--config", "nope", "-o", "repo"]),
        (bench.app, ["--config", "nope"]),
        (infer.app, ["video.mp4", "--config", "nope"]),
        (train.app, ["--config", "nope"]),
        (serve.app, ["--config", "nope"]),
    ],
    ids=["export-onnx", "export-calib", "export-triton", "bench", "infer", "train", "serve"],
)
def test_unknown_preset_is_a_usage_error_on_every_command(
    app: typer.Typer, argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    rc, err = _run(app, argv, capsys)
    assert rc == 2, err
    assert "--config" in err and "unknown preset 'nope'" in err and "tdmi-tiny" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("app", "argv", "message"),
    [
        (train.app, ["--save-every", "-1"], "--save-every must be >= 0, got -1"),
        (train.app, ["--workers", "-2"], "--workers must be >= 0, got -2"),
        (train.app, ["--optimizer", "sgd"], "Invalid value for '--optimizer'"),
        (
            train.app,
            ["--batch-size", "3", "--grad-accum", "2"],
            "--batch-size 3 is not divisible by --grad-accum 2",
        ),
        (train.app, ["--half-body-prob", "2"], "--half-body-prob must be in [0, 1], got 2.0"),
        (
            serve.app,
            ["--config", "tdmi-tiny", "--max-batch", "8"],
            "--preferred-batch must lie in 1..--max-batch=8, got [16]",
        ),
        # Fixed choices are typed options: typer names the option and the allowed values.
        (serve.app, ["--config", "tdmi-tiny", "--refine", "best"], "Invalid value for '--refine'"),
        (train.app, ["--schedule", "step"], "Invalid value for '--schedule'"),
        (train.app, ["--missing-frames", "skip"], "Invalid value for '--missing-frames'"),
        (infer.app, ["x.mp4", "-o", "out", "--box-policy", "nope"], "Invalid value for '--box-policy'"),
        (infer.app, ["x.mp4", "-o", "out", "--backend", "tflite"], "Invalid value for '--backend'"),
        (infer.app, ["x.mp4", "-o", "out", "--device", "tpu"], "Invalid value for '--device'"),
        (infer.app, ["x.mp4", "-o", "out", "--device", "cuda:x"], "cuda:N (N = GPU index)"),
        (eval_cli.app, ["gt", "pred", "--missing", "maybe"], "Invalid value for '--missing'"),
        (
            export.app,
            ["triton", "--config", "tdmi-tiny", "-o", "repo", "--kind", "tpu"],
            "Invalid value for '--kind': Value error, 'tpu' is not one of 'gpu', 'cpu'",
        ),
    ],
)
def test_bad_option_values_name_the_option_and_exit_2(
    app: typer.Typer, argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    rc, err = _run(app, argv, capsys)
    assert rc == 2, err
    assert message in err and err.startswith(("usage error:", "Usage:")), err
    assert list(tmp_path.iterdir()) == []


def test_config_errors_outside_a_command_keep_the_field_names() -> None:
    """The library (and a config JSON) speaks in field names; only the CLI maps them to options."""
    with pytest.raises(ConfigError, match=r"^save_every must be >= 0, got -1$"), options_of_config():
        TrainConfig(save_every=-1)


def _foreign_onnx(path: Path) -> Path:
    """Another network (one Relu, 5-D in and out) stamped with tdmi-tiny's metadata."""
    cfg = get_preset("tdmi-tiny")
    shape = [1, cfg.num_frames, 3, *cfg.input_size]
    x = helper.make_tensor_value_info("frames", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Relu", ["frames"], ["heatmaps"])], "other", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.save(write_metadata(model, cfg), str(path))
    return path


@pytest.mark.parametrize("extra", [["--fp16"], []], ids=["fp16", "fp32"])
def test_foreign_onnx_with_tdmi_metadata_is_one_clear_line(
    extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _foreign_onnx(tmp_path / "foreign.onnx")
    out = tmp_path / "out" / "final.onnx"
    rc = build_engine.run([str(src), *extra, "--onnx-only", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    flat = " ".join(err.split())
    assert flat.startswith("error:") and "internal error" not in flat
    assert "output 'heatmaps' is [1, 3, 3, 128, 96]" in flat and "[B, 17, 32, 24]" in flat
    assert "tdmi-export onnx" in flat
    assert not out.exists()


def test_foreign_onnx_is_refused_by_fuse_too(tmp_path: Path) -> None:
    from tdmi.export.fuse import fuse_file

    src = _foreign_onnx(tmp_path / "foreign.onnx")
    with pytest.raises(ExportError, match=r"output 'heatmaps' is .* tdmi metadata \(config tdmi-tiny\)"):
        fuse_file(src, tmp_path / "fused.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.onnx"]
