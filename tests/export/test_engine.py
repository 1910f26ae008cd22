"""tdmi-build-engine: --onnx-only end to end on tdmi-tiny, the no-TensorRT path, options, the GPU build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tdmi.artifacts.sidecar import BatchProfile, load_sidecar, sidecar_path
from tdmi.cli.build_engine import normalize_argv, run
from tdmi.errors import BackendUnavailableError, ConfigError
from tdmi.export.engine import EngineBuildOptions, build_engine, profile_for, write_final_onnx
from tdmi.export.metadata import read_metadata
from tdmi.plugins import ptx
from tdmi.plugins.temporal_diff import SPEC


def _plugin_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == SPEC.domain and n.op_type == SPEC.op_type]


# -- options ---------------------------------------------------------------------------------------


def test_options_validate() -> None:
    with pytest.raises(ConfigError, match="--calib"):
        EngineBuildOptions(precision="int8")
    with pytest.raises(ConfigError, match=r"0\.\.5"):
        EngineBuildOptions(opt_level=6)
    with pytest.raises(ConfigError, match="GiB"):
        EngineBuildOptions(workspace_gb=0)
    with pytest.raises(ConfigError, match="precision"):
        EngineBuildOptions(precision="bf16")
    d = EngineBuildOptions(profile=BatchProfile(1, 2, 4), timing_cache=Path("c.cache")).to_dict()
    assert d["profile"] == "1:2:4" and d["timing_cache"] == "c.cache" and d["precision"] == "fp32"


def test_default_profile_follows_the_onnx(tiny_exports: dict[str, Path]) -> None:
    assert profile_for(onnx.load(str(tiny_exports["static2"])), None) == BatchProfile(2, 2, 2)
    assert profile_for(onnx.load(str(tiny_exports["dynamic"])), None) == BatchProfile(1, 4, 16)
    assert profile_for(onnx.load(str(tiny_exports["dynamic"])), BatchProfile(1, 1, 3)) == BatchProfile(
        1, 1, 3
    )


def test_argv_defaults_to_the_build_command() -> None:
    assert normalize_argv(["m.onnx", "-o", "m.engine"]) == ["build", "m.onnx", "-o", "m.engine"]
    assert normalize_argv(["-o", "m.engine", "m.onnx"])[0] == "build"
    assert normalize_argv(["check", "m.onnx"]) == ["check", "m.onnx"]
    assert normalize_argv(["--help"]) == ["--help"]


# -- --onnx-only -----------------------------------------------------------------------------------


def test_onnx_only_fp32_fused_runs_like_the_source(tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    """The exporter's CPU form of the plugin op (export.ort_ops.run_onnx) checks the fused graph;
    the runtime refuses it (tests/runtime/test_runtime.py)."""
    from tdmi import runtime
    from tdmi.export.ort_ops import run_onnx

    out = tmp_path / "final.onnx"
    assert run([str(tiny_exports["dynamic"]), "--onnx-only", "--batch", "1:2:4", "-o", str(out)]) == 0
    model = onnx.load(str(out))
    nodes = _plugin_nodes(model)
    assert len(nodes) == 4  # one TemporalDiff per TDE stage
    meta = read_metadata(model)
    assert meta["fused"] and meta["precision"] == "fp32" and meta["config"].name == "tdmi-tiny"
    clips = np.random.default_rng(1).standard_normal((3, 3, 3, 128, 96)).astype(np.float32)
    with runtime.load(tiny_exports["dynamic"]) as src:
        np.testing.assert_allclose(run_onnx(out, clips), src.predict(clips), atol=1e-4, rtol=0)


def test_onnx_only_no_fuse_keeps_plain_ops(tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "plain.onnx"
    assert run([str(tiny_exports["static2"]), "--onnx-only", "--no-fuse", "-o", str(out)]) == 0
    model = onnx.load(str(out))
    assert not _plugin_nodes(model) and not read_metadata(model)["fused"]


@pytest.mark.modelopt
def test_onnx_only_fp16(tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fp16.onnx"
    assert (
        run(
            [
                str(tiny_exports["dynamic"]),
                "--onnx-only",
                "--fp16",
                "--calib",
                str(tiny_exports["calib"]),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    model = onnx.load(str(out))
    assert read_metadata(model)["precision"] == "fp16" and len(_plugin_nodes(model)) == 4
    inits = {i.data_type for i in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in inits


@pytest.mark.modelopt
def test_onnx_only_int8_with_a_tiny_calibration_set(tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "int8.onnx"
    assert (
        run(
            [
                str(tiny_exports["dynamic"]),
                "--onnx-only",
                "--int8",
                "--calib",
                str(tiny_exports["calib"]),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and len(_plugin_nodes(model)) == 4
    assert read_metadata(model)["precision"] == "int8"


@pytest.mark.modelopt
def test_an_already_converted_export_is_used_as_is(tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    fp16, again, int8 = tmp_path / "fp16.onnx", tmp_path / "again.onnx", tmp_path / "int8.onnx"
    opts = EngineBuildOptions(precision="fp16", calib=tiny_exports["calib"], fuse=False)
    assert write_final_onnx(tiny_exports["dynamic"], fp16, opts).precision == "fp16"
    prepared = write_final_onnx(fp16, again, EngineBuildOptions())
    assert prepared.precision == "fp16" and prepared.fused
    assert (
        run([str(fp16), "--onnx-only", "--int8", "--calib", str(tiny_exports["calib"]), "-o", str(int8)]) == 1
    )
    assert not int8.exists()


def test_int8_without_calibration_is_refused(
    tiny_exports: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "int8.onnx"
    assert run([str(tiny_exports["dynamic"]), "--onnx-only", "--int8", "-o", str(out)]) == 1
    assert not out.exists()
    err = " ".join(capsys.readouterr().err.split())
    assert "tdmi-export calib" in err and "CalibrationSet" not in err  # a command, not a Python API name


def test_onnx_only_refuses_a_profile_that_misses_the_static_batch(
    tiny_exports: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "bad.onnx"
    with pytest.raises(Exception, match="static"):
        write_final_onnx(tiny_exports["static2"], out, EngineBuildOptions(profile=BatchProfile(1, 4, 8)))
    assert run([str(tiny_exports["static2"]), "--onnx-only", "--batch", "1:4:8", "-o", str(out)]) == 1
    assert list(tmp_path.iterdir()) == []


def test_check_command_exit_codes(tiny_exports: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", str(tiny_exports["dynamic"])]) == 0
    assert "OK for TensorRT 11" in capsys.readouterr().out
    assert run(["check", str(tiny_exports["static2"]), "--batch", "1:4:8"]) == 1
    captured = capsys.readouterr()
    assert "profile" in captured.out and "pre-flight error" in captured.err
    assert run(["check", str(tiny_exports["dynamic"]), "--trt-version", "10.4"]) == 1


def test_plugin_print_ptx_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["plugin", "--print-ptx-path"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.suffix == ".ptx" and path.is_file() and ".entry" in path.read_text()
    assert run(["plugin"]) == 2


# -- without TensorRT ------------------------------------------------------------------------------


@pytest.mark.without(
    "tensorrt", reason="TensorRT and a GPU are present: the missing-TensorRT path cannot run"
)
def test_build_without_tensorrt_says_how_to_install_and_writes_nothing(
    tiny_exports: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    engine, cache = out_dir / "tiny.engine", out_dir / "timing.cache"
    args = [str(tiny_exports["dynamic"]), "--fp16", "-o", str(engine), "--timing-cache", str(cache)]
    code = run([*args, "--target", "tensorrt"])  # explicit: the default is TensorRT-RTX when only it is here
    err = capsys.readouterr().err
    assert code == 1
    assert "tdmi-deploy[trt]" in err and "NVIDIA" in err and "--onnx-only" in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    assert list(out_dir.iterdir()) == []
    with pytest.raises(BackendUnavailableError, match=r"pip install 'tdmi-deploy\[trt\]'"):
        build_engine(tiny_exports["dynamic"], engine, EngineBuildOptions())
    assert list(out_dir.iterdir()) == []


# -- with TensorRT ---------------------------------------------------------------------------------


@pytest.mark.tensorrt
@pytest.mark.cuda
def test_build_writes_engine_sidecar_and_timing_cache(tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    engine, cache = tmp_path / "tiny.engine", tmp_path / "timing.cache"
    args = [
        str(tiny_exports["dynamic"]),
        "--batch",
        "1:2:4",
        "--opt-level",
        "1",
        "--timing-cache",
        str(cache),
        "-o",
        str(engine),
    ]
    assert run(args) == 0
    sc = load_sidecar(engine)
    assert sidecar_path(engine).is_file() and cache.is_file() and cache.stat().st_size > 0
    assert sc.profile == BatchProfile(1, 2, 4) and sc.precision == "fp32"
    assert [t.name for t in sc.inputs] == ["frames"] and sc.plugin is not None
    assert sc.plugin.ptx_sha256 == ptx.kernel_sha256()  # names the kernel, whichever GPU built it
    first_cache = cache.read_bytes()
    assert run(args) == 0  # the cache is read back and saved again
    assert cache.stat().st_size >= len(first_cache)


@pytest.mark.tensorrt
@pytest.mark.cuda
def test_parser_errors_name_node_and_op(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    from tdmi.errors import EngineError
    from tdmi.export.engine import PreparedOnnx, _build_serialized, require_tensorrt
    from tdmi.export.preflight import PreflightReport
    from tdmi.spec.config import get_preset

    g = helper.make_graph(
        [helper.make_node("Unique", ["frames"], ["heatmaps"], name="the_unique")],
        "g",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, 3, 3, 128, 96])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    prepared = PreparedOnnx(
        model, get_preset("tdmi-tiny"), "fp32", False, BatchProfile(1, 1, 1), "", PreflightReport("11", "")
    )
    with pytest.raises(EngineError, match=r"the_unique.*Unique"):
        _build_serialized(require_tensorrt(), path, prepared, EngineBuildOptions(), False)


def test_output_name_must_match_the_mode(
    tiny_exports: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run([str(tiny_exports["dynamic"]), "--onnx-only", "-o", str(tmp_path / "x.engine")]) == 2
    assert "x.onnx" in capsys.readouterr().err
    assert run([str(tiny_exports["dynamic"]), "-o", str(tmp_path / "x.onnx")]) == 2
    assert (
        run([str(tiny_exports["dynamic"]), "--fp16", "--int8", "--onnx-only", "-o", str(tmp_path / "y.onnx")])
        == 2
    )
    assert list(tmp_path.iterdir()) == []
