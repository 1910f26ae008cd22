"""Engine sidecars: round trip, validation, and the version/GPU mismatch messages (no TensorRT needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tdmi.artifacts.sidecar import (
    SCHEMA_VERSION,
    BatchProfile,
    BuildEnvironment,
    EngineSidecar,
    GpuInfo,
    PluginInfo,
    TensorInfo,
    check_environment,
    check_plugin,
    load_sidecar,
    sidecar_path,
    write_sidecar,
)
from tdmi.errors import ConfigError, EngineError
from tdmi.spec.config import get_preset

H100 = BuildEnvironment("11.4.0.106", "13.0", "13.0", GpuInfo("NVIDIA H100 80GB HBM3", "9.0"))


def make_sidecar(env: BuildEnvironment = H100, **changes: object) -> EngineSidecar:
    fields: dict[str, object] = {
        "model_config": get_preset("tdmi-tiny").to_dict(),
        "precision": "fp16",
        "inputs": (TensorInfo("frames", (-1, 3, 3, 128, 96), "float32"),),
        "outputs": (TensorInfo("heatmaps", (-1, 17, 32, 24), "float32"),),
        "profile": BatchProfile(1, 4, 8),
        "environment": env,
        "plugin": PluginInfo("TemporalDiff", "tdmi", "1", "ab" * 32),
        "source_onnx_sha256": "cd" * 32,
        "engine_sha256": "ef" * 32,
        "toolkit_version": "tdmi-deploy 0.1.0",
        "build_options": {"opt_level": 3},
    }
    fields.update(changes)
    return EngineSidecar(**fields)  # type: ignore[arg-type]


def test_round_trip(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    original = make_sidecar()
    write_sidecar(sidecar_path(engine), original)
    assert sidecar_path(engine).name == "m.engine.json"
    loaded = load_sidecar(engine)  # the engine path finds its sidecar
    assert loaded == original
    assert loaded.config() == get_preset("tdmi-tiny")
    data = json.loads(sidecar_path(engine).read_text())
    assert (
        data["schema_version"] == SCHEMA_VERSION and data["environment"]["gpu"]["compute_capability"] == "9.0"
    )
    assert data["plugin"]["plugin_version"] == "1" and data["build_time"]


def _write_raw(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "m.engine.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def _valid_dict() -> dict[str, object]:
    return make_sidecar().to_dict()


def test_missing_sidecar(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"sidecar .* not found"):
        load_sidecar(tmp_path / "m.engine")


def test_malformed_json(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="not valid JSON"):
        load_sidecar(_write_raw(tmp_path, "{not json"))


def test_wrong_schema_and_schema_version(tmp_path: Path) -> None:
    d = _valid_dict()
    d["schema"] = "something-else"
    with pytest.raises(EngineError, match="not a tdmi engine sidecar"):
        load_sidecar(_write_raw(tmp_path, d))
    d = _valid_dict()
    d["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(EngineError, match=f"schema version {SCHEMA_VERSION + 1}"):
        load_sidecar(_write_raw(tmp_path, d))


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("precision",), None, "missing 'precision'"),
        (("precision",), "int4", "unknown precision"),
        (("environment", "gpu", "compute_capability"), None, "environment.gpu.compute_capability"),
        (("environment", "tensorrt_version"), 11, "'environment.tensorrt_version' has the wrong type"),
        (("profile", "max"), None, "profile.max"),
        (("profile", "min"), 9, "min <= opt <= max"),
        (("model_config", "num_frames"), 1, "invalid model_config"),
        (("model_config", "num_joints"), "seventeen", "model_config .*field num_joints must be an integer"),
        (("inputs",), [], "lists no inputs"),
        (("schema_version",), True, "wrong type"),
    ],
)
def test_invalid_fields(tmp_path: Path, path: tuple[str, ...], value: object, fragment: str) -> None:
    d = _valid_dict()
    target = d
    for key in path[:-1]:
        target = target[key]  # type: ignore[assignment]
    if value is None:
        del target[path[-1]]  # type: ignore[attr-defined]
    else:
        target[path[-1]] = value  # type: ignore[index]
    with pytest.raises(EngineError, match=fragment):
        load_sidecar(_write_raw(tmp_path, d))


def test_other_tensorrt_version_is_named_both_ways() -> None:
    here = BuildEnvironment("10.13.3.9", "12.9", "12.9", H100.gpu)
    with pytest.raises(EngineError) as e:
        check_environment(make_sidecar(), here, "m.engine")
    msg = str(e.value)
    assert "TensorRT 11.4.0.106" in msg and "TensorRT 10.13.3.9" in msg and "rebuild" in msg


def test_other_gpu_architecture_is_named_both_ways() -> None:
    here = BuildEnvironment("11.4.0.106", "13.0", "13.0", GpuInfo("NVIDIA A100-SXM4-80GB", "8.0"))
    with pytest.raises(EngineError) as e:
        check_environment(make_sidecar(), here, "m.engine")
    msg = str(e.value)
    assert "H100" in msg and "A100" in msg and "9.0" in msg and "8.0" in msg


def test_same_architecture_other_model_and_build_number_only_warn() -> None:
    here = BuildEnvironment("11.4.0.107", "13.0", "13.1", GpuInfo("NVIDIA H100 NVL", "9.0"))
    warnings = check_environment(make_sidecar(), here, "m.engine")
    assert len(warnings) == 2
    assert any("H100 NVL" in w for w in warnings) and any("11.4.0.107" in w for w in warnings)
    assert check_environment(make_sidecar(), H100, "m.engine") == []


def test_plugin_differences_are_warnings() -> None:
    sc = make_sidecar()
    assert check_plugin(sc, "1", "ab" * 32, "m.engine") == []
    assert "version 1" in check_plugin(sc, "2", "ab" * 32, "m.engine")[0]
    assert "different TemporalDiff kernel" in check_plugin(sc, "1", "00" * 32, "m.engine")[0]
    assert check_plugin(make_sidecar(plugin=None), "2", None, "m.engine") == []


@pytest.mark.parametrize(
    ("text", "expected"), [("1:8:16", (1, 8, 16)), ("4", (4, 4, 4)), (" 2:2:2 ", (2, 2, 2))]
)
def test_batch_profile_parse(text: str, expected: tuple[int, int, int]) -> None:
    p = BatchProfile.parse(text)
    assert (p.min, p.opt, p.max) == expected and str(p) == ":".join(map(str, expected))


@pytest.mark.parametrize("text", ["1:8", "a:b:c", "8:4:16", "0:1:1", ""])
def test_batch_profile_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        BatchProfile.parse(text)


# -- TensorRT-RTX ----------------------------------------------------------------------------------

RTX_CPU = BuildEnvironment("1.7.1.116", "none", "none", GpuInfo("none (CPU-only build)", "none"))


def test_rtx_fields_round_trip_and_old_sidecars_mean_tensorrt(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    rtx = make_sidecar(RTX_CPU, target="tensorrt-rtx", compute_capabilities=("8.6", "12.0"))
    write_sidecar(sidecar_path(engine), rtx)
    assert load_sidecar(engine) == rtx
    old = _valid_dict()
    del old["target"], old["compute_capabilities"]
    loaded = load_sidecar(_write_raw(tmp_path, old))
    assert loaded.target == "tensorrt" and loaded.compute_capabilities == ()
    bad = {**_valid_dict(), "target": "openvino"}
    with pytest.raises(EngineError, match="unknown target 'openvino'"):
        load_sidecar(_write_raw(tmp_path, bad))


def test_rtx_engine_runs_on_any_listed_gpu_and_names_both_otherwise() -> None:
    rtx = make_sidecar(RTX_CPU, target="tensorrt-rtx", compute_capabilities=("8.6", "8.9"))
    ada = BuildEnvironment("1.7.1.116", "12.9", "13.0", GpuInfo("NVIDIA GeForce RTX 4090", "8.9"))
    assert check_environment(rtx, ada, "m.engine") == []
    blackwell = BuildEnvironment("1.7.1.116", "12.9", "13.0", GpuInfo("NVIDIA GeForce RTX 5090", "12.0"))
    with pytest.raises(EngineError, match=r"8\.6, 8\.9 but this GPU is NVIDIA GeForce RTX 5090") as err:
        check_environment(rtx, blackwell, "m.engine")
    assert "--compute-capability 120" in str(err.value)
    newer = BuildEnvironment("1.8.0.1", "12.9", "13.0", GpuInfo("NVIDIA GeForce RTX 4090", "8.9"))
    named = r"TensorRT-RTX 1\.7\.1\.116 but this machine has TensorRT-RTX 1\.8"
    with pytest.raises(EngineError, match=named):
        check_environment(rtx, newer, "m.engine")
