"""TensorRT-RTX: real parses and CPU-only engine builds of tdmi-tiny, the plugin, options and errors.

These need the ``rtx`` extra (two pip wheels) but no GPU: TensorRT-RTX's builder compiles for
the requested compute capabilities on any machine. Deserialising needs a GPU, so the runtime is
tested up to the checks it makes before deserialising.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from tdmi import runtime
from tdmi.artifacts.sidecar import BatchProfile, BuildEnvironment, GpuInfo, load_sidecar, sidecar_path
from tdmi.cli.build_engine import run
from tdmi.errors import BackendUnavailableError, ConfigError, EngineError, ExportError
from tdmi.export.engine import (
    EngineBuildOptions,
    build_engine,
    parse_compute_capabilities,
    prepare_onnx,
    write_final_onnx,
)
from tdmi.export.onnx_export import export_onnx
from tdmi.export.preflight import check_onnx
from tdmi.plugins.rtx import LIB_NAME, LIB_SONAME, ensure_library_name
from tdmi.plugins.temporal_diff import SPEC

# FP16 and INT8 conversions run NVIDIA ModelOpt (the ``modelopt`` extra).
PRECISIONS = [
    "fp32",
    pytest.param("fp16", marks=pytest.mark.modelopt),
    pytest.param("int8", marks=pytest.mark.modelopt),
]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tiny_exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The session's native-DCN exports (the builder lowers them) under this file's batch names, the
    calibration set, and a folder of this file's own for the converted graphs."""
    return {**tiny_exports, "static": tiny_exports["static2"], "dir": tmp_path_factory.mktemp("rtx")}


def _options(precision: str, tiny: dict[str, Path], **kw: object) -> EngineBuildOptions:
    calib = tiny["calib"] if precision != "fp32" else None
    return EngineBuildOptions(precision=precision, calib=calib, target="tensorrt-rtx", **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def converted(tiny: dict[str, Path]) -> dict[tuple[str, str], Path]:
    """Each (precision, batch) converted once (unfused, DCN decomposed): the slow step, shared."""
    cache: dict[tuple[str, str], Path] = {}

    def get(precision: str, batch: str) -> Path:
        key = (precision, batch)
        if key not in cache:
            out = tiny["dir"] / f"{precision}-{batch}.onnx"
            write_final_onnx(tiny[batch], out, _options(precision, tiny, fuse=False))
            cache[key] = out
        return cache[key]

    return get  # type: ignore[return-value]


def _parsed_layers(model: onnx.ModelProto, tmp_path: Path) -> list[str]:
    """Parse with TensorRT-RTX's own ONNX parser; the network's layer types."""
    from tdmi.plugins.rtx import import_rtx
    from tdmi.plugins.rtx_plugin import register_rtx_plugins

    trt = import_rtx()
    register_rtx_plugins()
    path = tmp_path / "parse.onnx"
    onnx.save(model, str(path))
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(path)), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    return [network.get_layer(i).type.name for i in range(network.num_layers)]


# -- real builds -----------------------------------------------------------------------------------


@pytest.mark.rtx
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("batch", ["static", "dynamic"])
@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
def test_cpu_only_build(
    precision: str, batch: str, fuse: bool, tiny: dict[str, Path], converted, tmp_path: Path
) -> None:
    src = converted(precision, batch)
    options = _options(precision, tiny, fuse=fuse, compute_capabilities=(86, 120))
    prepared = prepare_onnx(src, options, tmp_path)
    assert prepared.report.ok, prepared.report.summary()
    layers = _parsed_layers(prepared.model, tmp_path)
    assert layers.count("PLUGIN_V3") == (4 if fuse else 0)
    assert "GRID_SAMPLE" in layers and layers.count("GRID_SAMPLE") == 4  # the decomposed DCNs
    assert not [n for n in prepared.model.graph.node if n.op_type == "DeformConv"]

    engine = tmp_path / "tiny.engine"
    result = build_engine(src, engine, options)
    data = engine.read_bytes()
    assert len(data) > 100_000
    assert (b"TemporalDiff" in data) == fuse  # the plugin (name, namespace, num_frames) is serialised
    meta = load_sidecar(engine)
    assert meta == result.metadata
    assert meta.engine_sha256 == hashlib.sha256(data).hexdigest()
    assert meta.target == "tensorrt-rtx" and meta.compute_capabilities == ("8.6", "12.0")
    assert meta.precision == precision and meta.config().deform_conv == "decomposed"
    assert meta.environment.tensorrt_version.startswith("1.")
    assert meta.profile == (BatchProfile(2, 2, 2) if batch == "static" else BatchProfile(1, 4, 16))
    assert meta.inputs[0].shape[0] == (2 if batch == "static" else -1)
    assert (meta.plugin is not None) == fuse
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parse.onnx", "tiny.engine", "tiny.engine.json"]


@pytest.mark.rtx
@pytest.mark.modelopt
def test_cli_builds_fp16_on_a_gpu_less_machine(
    tiny: dict[str, Path], converted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = converted("fp16", "dynamic")
    engine = tmp_path / "x.engine"
    code = run([str(src), "--target", "tensorrt-rtx", "--fp16", "--batch", "1:2:4", "-o", str(engine)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "TensorRT-RTX 1." in out and "8.0, 8.6, 8.9, 12.0" in " ".join(out.split())
    side = json.loads(sidecar_path(engine).read_text())
    assert side["target"] == "tensorrt-rtx" and side["profile"] == {"min": 1, "opt": 2, "max": 4}
    assert side["build_options"]["deform_conv"] == "decomposed" and side["build_options"]["fused"]


# -- errors: one line, nothing written -------------------------------------------------------------


def test_compute_capability_options() -> None:
    assert parse_compute_capabilities("80, 8.6,sm_89,SM120") == (80, 86, 89, 120)
    with pytest.raises(ConfigError, match=r"Hopper, SM90"):
        EngineBuildOptions(target="tensorrt-rtx", compute_capabilities=(86, 90))
    with pytest.raises(ConfigError, match="for --target tensorrt-rtx"):
        EngineBuildOptions(target="tensorrt", compute_capabilities=(86,))
    with pytest.raises(ConfigError, match="numbers such as"):
        parse_compute_capabilities("ampere")
    with pytest.raises(ConfigError, match="timing-cache"):
        EngineBuildOptions(target="tensorrt-rtx", timing_cache=Path("t.cache"))
    opts = EngineBuildOptions(target="tensorrt-rtx")
    assert opts.compute_capabilities == (80, 86, 89, 120) and opts.resolved_deform_conv == "decomposed"
    assert EngineBuildOptions().resolved_deform_conv == "native"


def test_unsupported_compute_capability_is_one_line(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = tmp_path / "x.engine"
    args = [
        str(tiny["dynamic"]),
        "--target",
        "tensorrt-rtx",
        "--compute-capability",
        "86,90",
        "-o",
        str(engine),
    ]
    assert run(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "compute capability 90" in err and "Hopper" in err
    assert list(tmp_path.iterdir()) == []


def test_preflight_knows_rtx_has_no_deformconv(tiny: dict[str, Path]) -> None:
    rtx = check_onnx(tiny["dynamic"], target="tensorrt-rtx")
    codes = [f.code for f in rtx.errors]
    assert codes == ["deformconv-rtx"] * 4
    assert "--deform-conv decomposed" in rtx.summary()
    assert check_onnx(tiny["dynamic"]).ok  # TensorRT takes DeformConv (its plugin)


@pytest.mark.rtx
def test_native_deformconv_for_rtx_fails_before_building(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = tmp_path / "x.engine"
    args = [str(tiny["static"]), "--target", "tensorrt-rtx", "--deform-conv", "native", "-o", str(engine)]
    assert run(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "deformconv" in err.lower() and "decomposed" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.rtx
@pytest.mark.modelopt
def test_fp16_of_a_graph_that_cannot_be_made_fp16(tiny: dict[str, Path], converted, tmp_path: Path) -> None:
    # An INT8 (Q/DQ) graph is already converted: FP16 cannot be made of it.
    src = converted("int8", "static")
    with pytest.raises(ExportError, match="already int8: start from the FP32 export"):
        build_engine(src, tmp_path / "x.engine", _options("fp16", tiny))
    assert list(tmp_path.iterdir()) == []


def test_missing_rtx_wheels_are_one_clear_error(
    tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tdmi.plugins.rtx as rtx

    monkeypatch.setattr(rtx.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'tdmi-deploy\[rtx\]'"):
        build_engine(tiny["static"], tmp_path / "x.engine", _options("fp32", tiny))
    assert list(tmp_path.iterdir()) == []


# -- the engine at run time: refused before deserialising ------------------------------------------


@pytest.fixture(scope="module")
def rtx_engine(tiny: dict[str, Path], converted, tmp_path_factory: pytest.TempPathFactory) -> Path:
    engine = tmp_path_factory.mktemp("rtx-engine") / "tiny.engine"
    build_engine(converted("fp32", "static"), engine, _options("fp32", tiny, compute_capabilities=(86, 89)))
    return engine


def _env(cc: str, version: str) -> BuildEnvironment:
    return BuildEnvironment(version, "12.9", "13.0", GpuInfo("NVIDIA RTX test", cc))


@pytest.mark.rtx
def test_rtx_engine_opened_with_tensorrt_is_refused(rtx_engine: Path) -> None:
    with pytest.raises(EngineError, match=r"is a TensorRT-RTX engine .* cannot be opened with TensorRT"):
        runtime.load(rtx_engine, target="tensorrt")


@pytest.mark.rtx
def test_tensorrt_engine_opened_with_rtx_is_refused(rtx_engine: Path, tmp_path: Path) -> None:
    engine = tmp_path / "trt.engine"
    shutil.copy(rtx_engine, engine)
    side = json.loads(sidecar_path(rtx_engine).read_text())
    side["target"] = "tensorrt"
    sidecar_path(engine).write_text(json.dumps(side))
    with pytest.raises(EngineError, match=r"is a TensorRT engine .* cannot be opened with TensorRT-RTX"):
        runtime.load(engine, target="tensorrt-rtx")


@pytest.mark.rtx
def test_gpu_outside_the_built_compute_capabilities_is_named(rtx_engine: Path) -> None:
    version = load_sidecar(rtx_engine).environment.tensorrt_version
    with pytest.raises(
        EngineError, match=r"8\.6, 8\.9 but this GPU is NVIDIA RTX test \(compute capability 12\.0\)"
    ):
        runtime.load(rtx_engine, environment=_env("12.0", version))


# -- the plugin library name -----------------------------------------------------------------------


def test_library_name_link_is_created_once(tmp_path: Path) -> None:
    (tmp_path / LIB_SONAME).write_bytes(b"\x7fELF")
    link = ensure_library_name(tmp_path)
    assert link.is_symlink() and os.readlink(link) == LIB_SONAME
    assert ensure_library_name(tmp_path) == link
    assert sorted(p.name for p in tmp_path.iterdir()) == [LIB_NAME, LIB_SONAME]


def test_library_name_temp_left_by_a_killed_run_is_swept(tmp_path: Path) -> None:
    """The link's temp name is the sweeper's (``.NAME.tdmi-PID-link.tmp``): a dead run's is removed."""
    import subprocess
    import sys

    (tmp_path / LIB_SONAME).write_bytes(b"\x7fELF")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".{LIB_NAME}.tdmi-{int(dead.stdout)}-link.tmp"
    stale.symlink_to(LIB_SONAME)
    ensure_library_name(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LIB_NAME, LIB_SONAME]


def test_library_name_failure_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / LIB_SONAME).write_bytes(b"\x7fELF")

    def refuse(*_: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(BackendUnavailableError, match=f"ln -s {LIB_SONAME}"):
        ensure_library_name(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LIB_SONAME]  # no temporary left behind


_PLUGIN_SCRIPT = r"""
import sys
from pathlib import Path
import onnx
from onnx import TensorProto, helper
import tensorrt_rtx_libs
libdir = Path(tensorrt_rtx_libs.__file__).resolve().parent
assert libdir == Path(sys.argv[1]), libdir
print("link before:", (libdir / "libtensorrt_rtx.so").exists())
from tdmi.plugins.rtx import import_rtx
from tdmi.plugins.rtx_plugin import register_rtx_plugins
from tdmi.plugins.temporal_diff import make_node, opset_import
trt = import_rtx()
register_rtx_plugins()
print("link after:", (libdir / "libtensorrt_rtx.so").exists())
x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [6, 4, 5, 5])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 8, 5, 5])
graph = helper.make_graph([make_node("x", "y", 3, name="td")], "g", [x], [y])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), opset_import()])
path = Path(sys.argv[2])
onnx.save(model, str(path))
logger = trt.Logger(trt.Logger.ERROR)
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
assert parser.parse_from_file(str(path)), [parser.get_error(i).desc() for i in range(parser.num_errors)]
layer = network.get_layer(0)
out = network.get_output(0)
print("layer:", layer.type.name, "output:", tuple(out.shape), out.dtype)
config = builder.create_builder_config()
config.num_compute_capabilities = 1
config.set_compute_capability(trt.ComputeCapability.SM89, 0)
plan = builder.build_serialized_network(network, config)
print("plan bytes:", plan.nbytes)
"""


@pytest.mark.rtx
def test_plugin_in_a_fresh_install_builds_instead_of_aborting(tmp_path: Path) -> None:
    """A copy of the libs package without the link (as pip installs it): the plugin still works.

    Run in a subprocess: without the fix TensorRT-RTX aborts the whole process.
    """
    import tensorrt_rtx_libs

    real = Path(tensorrt_rtx_libs.__file__).resolve().parent
    pkg = tmp_path / "site" / "tensorrt_rtx_libs"
    pkg.mkdir(parents=True)
    shutil.copy(real / "__init__.py", pkg / "__init__.py")
    for lib in real.glob("*.so.1"):
        (pkg / lib.name).symlink_to(lib)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(REPO / "src")]))
    script = tmp_path / "plugin.py"
    script.write_text(_PLUGIN_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(pkg.resolve()), str(tmp_path / "td.onnx")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "link before: False" in out and "link after: True" in out
    assert "layer: PLUGIN_V3 output: (2, 8, 5, 5) DataType.HALF" in out
    assert int(out.split("plan bytes:")[1].split()[0]) > 0
    assert (pkg / LIB_NAME).is_symlink()
    assert SPEC.plugin_id == "tdmi::TemporalDiff"


# -- full size -------------------------------------------------------------------------------------


@pytest.mark.rtx
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TDMI_SLOW"), reason="full-size presets (minutes): TDMI_SLOW=1")
def test_w48_fp16_cpu_only_build(tmp_path: Path) -> None:
    src = tmp_path / "w48.onnx"
    with pytest.warns(UserWarning, match="random weights"):
        export_onnx("tdmi-w48-384x288", src, batch=1, verify=False, progress=False)
    engine = tmp_path / "w48-fp16.engine"
    with pytest.warns(UserWarning, match="SMOKE TESTS"):
        options = EngineBuildOptions(precision="fp16", target="tensorrt-rtx")
        result = build_engine(src, engine, options)
    assert result.metadata.precision == "fp16" and result.metadata.plugin is not None
    assert engine.stat().st_size > 50 * 2**20  # W48's ~63 M FP16 weights, at least
