"""One ONNX Runtime session factory, one calibration loader, one version parser (issue 23).

Each test fails if a second copy comes back or the one copy loses a check a caller relied on.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh

from tdmi.errors import ConfigError, DataError, EngineError, ExportError

SRC = Path(__file__).resolve().parents[1] / "src" / "tdmi"
FACTORY = SRC / "plugins" / "ort.py"


def _identity_model() -> onnx.ModelProto:
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    graph = oh.make_graph([oh.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=9)


def test_no_second_session_factory_in_src() -> None:
    """``InferenceSession(`` and ``SessionOptions(`` are built in tdmi/plugins/ort.py and nowhere else."""
    pattern = re.compile(r"\b(InferenceSession|SessionOptions)\(")
    offenders = [
        f"{p.relative_to(SRC.parent)}:{n}"
        for p in sorted(SRC.rglob("*.py"))
        if p != FACTORY
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == [], f"ONNX Runtime sessions built outside tdmi.plugins.ort: {offenders}"
    assert pattern.search(FACTORY.read_text())


def test_factory_applies_the_options(tmp_path: Path) -> None:
    from tdmi.plugins.ort import create_session

    model = _identity_model()
    sess = create_session(model.SerializeToString(), threads=1, allow_spinning=False, arena=False)
    so = sess.get_session_options()
    assert so.enable_cpu_mem_arena is False
    assert so.intra_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert sess.get_providers() == ["CPUExecutionProvider"]
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    out = create_session(path).run(None, {"x": np.ones((1, 2), np.float32)})[0]
    np.testing.assert_array_equal(out, np.ones((1, 2), np.float32))


def test_factory_refuses_in_one_line(tmp_path: Path) -> None:
    from tdmi.plugins.ort import create_session

    with pytest.raises(ExportError, match=r"--detector .*nope.onnx not found"):
        create_session(tmp_path / "nope.onnx", what="--detector")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ExportError, match="is empty"):
        create_session(tmp_path / "empty.onnx")
    with pytest.raises(ExportError, match="ONNX Runtime cannot load the graph: ") as e:
        create_session(b"not a graph")
    assert "\n" not in str(e.value)
    with pytest.raises(ExportError, match="ONNX Runtime cannot run the graph: try the plain one"):
        create_session(b"not a graph", explain=lambda text: "try the plain one")


def test_runtime_and_exporter_sessions_come_from_the_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tdmi.export.ort_ops as ort_ops
    import tdmi.runtime.onnxruntime_backend as backend
    from tdmi.plugins import ort

    calls: list[dict[str, object]] = []
    real = ort.create_session

    def spy(model: object, **kw: object) -> object:
        calls.append(kw)
        return real(model, **kw)  # type: ignore[arg-type]  # the spy passes on what it was given

    monkeypatch.setattr(ort_ops, "create_session", spy)
    monkeypatch.setattr(backend, "create_session", spy)
    ort_ops.make_session(_identity_model(), arena=False)
    path = tmp_path / "m.onnx"
    onnx.save(_identity_model(), str(path))
    _, dev = backend.ort_session(path, "cpu", threads=1)
    assert dev == "cpu"
    assert [c.get("arena") for c in calls] == [False, None]
    assert calls[1]["providers"] == ["CPUExecutionProvider"] and calls[1]["threads"] == 1


def test_the_one_calibration_loader_always_checks_fit(tmp_path: Path) -> None:
    from tdmi.export.calibration import CalibrationSet, load_calibration
    from tdmi.spec.config import get_preset

    cfg = get_preset("tdmi-tiny")
    t, (h, w) = cfg.num_frames, cfg.input_size
    other = CalibrationSet(
        clips=np.random.default_rng(0).standard_normal((2, t, 3, h + 8, w)).astype(np.float32),
        source="test",
        smoke_only=True,
    )
    with pytest.raises(DataError, match="calibration clips are"):
        load_calibration(cfg, other)
    path = other.save(tmp_path / "other.npz")
    with pytest.raises(DataError, match="calibration clips are"):
        load_calibration(cfg, path)
    with pytest.raises(DataError, match=r"calibration file .* not found"):
        load_calibration(cfg, tmp_path / "missing.npz")


def test_engine_uses_the_one_calibration_loader() -> None:
    import tdmi.export.engine as engine

    assert not hasattr(engine, "load_calibration")
    text = (SRC / "export" / "engine.py").read_text()
    assert "from tdmi.export.calibration import DEFAULT_CALIB_CLIPS, load_calibration" in text


def test_version_parsers_are_the_one() -> None:
    from tdmi.artifacts import sidecar
    from tdmi.export import preflight
    from tdmi.plugins import availability

    for module in (sidecar, preflight, availability):
        assert not hasattr(module, "_version_tuple") and not hasattr(module, "_parse_version")
    with pytest.raises(ConfigError, match="TensorRT version 'latest' is not a version number"):
        preflight.op_table("latest")
    assert preflight.op_table("10.15.1.29").target == "10.15"
    assert preflight.op_table("10.9").target == "10.9"


def test_sidecar_compares_releases_and_refuses_a_damaged_version() -> None:
    from dataclasses import replace

    from tdmi.artifacts.sidecar import BuildEnvironment, GpuInfo, check_environment

    gpu = GpuInfo(name="GPU", compute_capability="8.9")
    env = BuildEnvironment("10.15.1.29", "12.8", "12.8", gpu)

    class Car:
        target = "tensorrt"
        environment = env
        compute_capabilities: tuple[str, ...] = ()

    car = Car()
    assert check_environment(car, env) == []  # type: ignore[arg-type]  # duck-typed sidecar
    assert "running with 10.15.1.30" in check_environment(car, replace(env, tensorrt_version="10.15.1.30"))[0]  # type: ignore[arg-type]  # duck-typed sidecar
    with pytest.raises(
        EngineError, match=r"built with TensorRT 10\.15\.1\.29 but this machine has TensorRT 10\.16"
    ):
        check_environment(car, replace(env, tensorrt_version="10.16.0"))  # type: ignore[arg-type]  # duck-typed sidecar
    car.environment = replace(env, tensorrt_version="unknown")
    with pytest.raises(EngineError, match="not a version number: rebuild"):
        check_environment(car, env)  # type: ignore[arg-type]  # duck-typed sidecar


def test_split_pair_checks_are_one_for_both_backends(tmp_path: Path) -> None:
    """ONNX Runtime's and OpenVINO's split predictors share the pair checks (and their messages)."""
    from tdmi.runtime.features import _check_pair, _require_pair
    from tdmi.spec.config import get_preset

    b, h = tmp_path / "m.backbone.onnx", tmp_path / "m.head.onnx"
    with pytest.raises(
        ExportError, match=r"m\.backbone\.onnx not found: .*`tdmi-export onnx --split -o m\.onnx`"
    ):
        _require_pair(b, h, "--split")
    cfg = get_preset("tdmi-tiny")

    def meta(split: str, config: object = cfg) -> dict[str, object]:
        return {"config": config, "extra": {"split": split}}

    _check_pair(b, h, meta("backbone"), meta("head"))
    with pytest.raises(ExportError, match="different model configs"):
        _check_pair(b, h, meta("backbone"), meta("head", cfg.replace(num_joints=cfg.num_joints - 1)))
    with pytest.raises(ExportError, match="not a backbone/head pair"):
        _check_pair(b, h, meta("head"), meta("backbone"))


def test_both_exports_refuse_an_unknown_dcn_form_before_loading_a_model(tmp_path: Path) -> None:
    from tdmi.export.onnx_export import export_onnx
    from tdmi.export.split_export import export_split_onnx

    for export in (export_onnx, export_split_onnx):
        with pytest.raises(ExportError, match="deform_conv must be 'native' or 'decomposed', got 'dense'"):
            export(None, tmp_path / "x.onnx", deform_conv="dense", progress=False)
    assert not list(tmp_path.iterdir())
