"""The JSON sidecar written next to every TensorRT engine (``model.engine.json``).

A serialized engine is opaque and only valid for the TensorRT version and GPU that built it.
The sidecar says what is inside (model config, precision, I/O, profile, plugin) and where it was
built, so a mismatch can be reported by name *before* TensorRT deserialises anything (a
mismatched deserialisation fails with an unhelpful message, or crashes).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

from tdmi.errors import ConfigError, EngineError
from tdmi.utils import write_text_atomic

SCHEMA = "tdmi-engine-sidecar"
SCHEMA_VERSION = 1
EnginePrecision = Literal["fp32", "fp16", "int8"]
EngineTarget = Literal["tensorrt", "tensorrt-rtx"]
PRECISIONS: tuple[EnginePrecision, ...] = get_args(EnginePrecision)
TARGETS: tuple[EngineTarget, ...] = get_args(EngineTarget)
TARGET_NAMES = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}
INPUT_NAME = "frames"


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


@dataclass(frozen=True)
class BatchProfile:
    """TensorRT optimisation profile over the batch dimension of ``frames`` (min <= opt <= max)."""

    min: int = 1
    opt: int = 1
    max: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.min <= self.opt <= self.max):
            raise ConfigError(f"batch profile must satisfy 1 <= min <= opt <= max, got {self}")

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """Parse ``MIN:OPT:MAX`` (or a single ``N`` for a fixed batch)."""
        parts = text.strip().split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"--batch must be MIN:OPT:MAX integers (e.g. 1:8:16), got {text!r}") from None
        if len(values) == 1:
            values = values * 3
        if len(values) != 3:
            raise ConfigError(f"--batch must be MIN:OPT:MAX (e.g. 1:8:16), got {text!r}")
        return cls(*values)

    def covers(self, batch: int) -> bool:
        return self.min <= batch <= self.max

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str, ...]  # -1 or a symbolic name for dynamic dims
    dtype: str  # "float32", "float16", ...


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "9.0"


@dataclass(frozen=True)
class BuildEnvironment:
    """What an engine is tied to: TensorRT version and GPU architecture (plus CUDA, for the record)."""

    tensorrt_version: str
    cuda_runtime_version: str
    cuda_driver_version: str
    gpu: GpuInfo


@dataclass(frozen=True)
class PluginInfo:
    name: str
    namespace: str
    plugin_version: str
    # tdmi.plugins.ptx.kernel_sha256 of the embedded kernel; None when the engine has no plugin node
    ptx_sha256: str | None


@dataclass(frozen=True)
class EngineSidecar:
    model_config: dict[str, Any]
    precision: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    profile: BatchProfile
    environment: BuildEnvironment
    plugin: PluginInfo | None
    source_onnx_sha256: str
    engine_sha256: str
    toolkit_version: str
    build_options: dict[str, Any] = field(default_factory=dict)
    # Which runtime reads the engine; sidecars written before the RTX target say nothing: TensorRT.
    target: str = "tensorrt"
    # RTX: the GPUs the engine was built for ("8.6", ...); TensorRT: empty (the build GPU's only).
    compute_capabilities: tuple[str, ...] = ()
    build_time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # JSON form (tuples -> lists) so a loaded sidecar equals the one written.
        object.__setattr__(self, "model_config", json.loads(json.dumps(self.model_config)))
        object.__setattr__(self, "build_options", json.loads(json.dumps(self.build_options)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def config(self) -> Any:
        """The embedded model config as a ``TDMIConfig``."""
        from tdmi.spec.config import TDMIConfig

        return TDMIConfig.from_dict(self.model_config)


def write_sidecar(path: str | Path, sidecar: EngineSidecar) -> None:
    write_text_atomic(path, sidecar.to_json())


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, path: Path) -> Any:
    if key not in data:
        raise EngineError(
            f"engine sidecar {path} is missing '{where}{key}': rebuild the engine with tdmi-build-engine"
        )
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EngineError(f"engine sidecar {path}: '{where}{key}' has the wrong type: rebuild the engine")
    return value


def _tensor(d: Any, path: Path, where: str) -> TensorInfo:
    if not isinstance(d, dict):
        raise EngineError(f"engine sidecar {path}: '{where}' entries must be objects: rebuild the engine")
    shape = _require(d, "shape", list, where + ".", path)
    if not all(isinstance(s, (int, str)) and not isinstance(s, bool) for s in shape):
        raise EngineError(f"engine sidecar {path}: '{where}.shape' must hold integers or names")
    return TensorInfo(
        name=_require(d, "name", str, where + ".", path),
        shape=tuple(shape),
        dtype=_require(d, "dtype", str, where + ".", path),
    )


def _target(data: dict[str, Any], path: Path) -> str:
    target = data.get("target", "tensorrt")
    if target not in TARGETS:
        raise EngineError(f"engine sidecar {path}: unknown target {target!r} (expected one of {TARGETS})")
    return str(target)


def _compute_capabilities(data: dict[str, Any], path: Path) -> tuple[str, ...]:
    ccs = data.get("compute_capabilities") or []
    if not isinstance(ccs, list) or not all(isinstance(c, str) for c in ccs):
        raise EngineError(f"engine sidecar {path}: 'compute_capabilities' must be a list of strings")
    return tuple(ccs)


def sidecar_from_dict(data: Any, path: Path) -> EngineSidecar:
    """Validate a parsed sidecar; every problem is an ``EngineError`` naming the file and field."""
    if not isinstance(data, dict):
        raise EngineError(f"engine sidecar {path} is not a JSON object: rebuild the engine")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise EngineError(f"{path} is not a tdmi engine sidecar (schema {schema!r}, expected {SCHEMA!r})")
    version = _require(data, "schema_version", int, "", path)
    if version != SCHEMA_VERSION:
        raise EngineError(
            f"engine sidecar {path} has schema version {version}, this toolkit reads version "
            f"{SCHEMA_VERSION}: "
            "rebuild the engine with this toolkit's tdmi-build-engine"
        )
    precision = _require(data, "precision", str, "", path)
    if precision not in PRECISIONS:
        raise EngineError(
            f"engine sidecar {path}: unknown precision {precision!r} (expected one of {PRECISIONS})"
        )
    model_config = _require(data, "model_config", dict, "", path)
    try:
        from tdmi.spec.config import TDMIConfig

        TDMIConfig.from_dict(model_config)
    except ConfigError as e:
        raise EngineError(f"engine sidecar {path}: invalid model_config ({e})") from None
    inputs = tuple(_tensor(t, path, "inputs") for t in _require(data, "inputs", list, "", path))
    outputs = tuple(_tensor(t, path, "outputs") for t in _require(data, "outputs", list, "", path))
    if not inputs or not outputs:
        raise EngineError(f"engine sidecar {path} lists no inputs or no outputs: rebuild the engine")
    prof = _require(data, "profile", dict, "", path)
    try:
        profile = BatchProfile(
            _require(prof, "min", int, "profile.", path),
            _require(prof, "opt", int, "profile.", path),
            _require(prof, "max", int, "profile.", path),
        )
    except ConfigError as e:
        raise EngineError(f"engine sidecar {path}: {e}") from None
    env = _require(data, "environment", dict, "", path)
    gpu = _require(env, "gpu", dict, "environment.", path)
    environment = BuildEnvironment(
        tensorrt_version=_require(env, "tensorrt_version", str, "environment.", path),
        cuda_runtime_version=_require(env, "cuda_runtime_version", str, "environment.", path),
        cuda_driver_version=_require(env, "cuda_driver_version", str, "environment.", path),
        gpu=GpuInfo(
            name=_require(gpu, "name", str, "environment.gpu.", path),
            compute_capability=_require(gpu, "compute_capability", str, "environment.gpu.", path),
        ),
    )
    plugin = None
    if data.get("plugin") is not None:
        p = _require(data, "plugin", dict, "", path)
        ptx = p.get("ptx_sha256")
        if ptx is not None and not isinstance(ptx, str):
            raise EngineError(f"engine sidecar {path}: 'plugin.ptx_sha256' must be a string or null")
        plugin = PluginInfo(
            name=_require(p, "name", str, "plugin.", path),
            namespace=_require(p, "namespace", str, "plugin.", path),
            plugin_version=_require(p, "plugin_version", str, "plugin.", path),
            ptx_sha256=ptx,
        )
    return EngineSidecar(
        model_config=model_config,
        precision=precision,
        inputs=inputs,
        outputs=outputs,
        profile=profile,
        environment=environment,
        plugin=plugin,
        source_onnx_sha256=_require(data, "source_onnx_sha256", str, "", path),
        engine_sha256=_require(data, "engine_sha256", str, "", path),
        toolkit_version=_require(data, "toolkit_version", str, "", path),
        build_options=data.get("build_options") or {},
        target=_target(data, path),
        compute_capabilities=_compute_capabilities(data, path),
        build_time=_require(data, "build_time", str, "", path),
        schema=schema,
        schema_version=version,
    )


def load_sidecar(path: str | Path) -> EngineSidecar:
    """Read and validate a sidecar; accepts the engine path or the sidecar path."""
    p = Path(path)
    if p.suffix != ".json":
        p = sidecar_path(p)
    if not p.is_file():
        raise EngineError(
            f"engine sidecar {p} not found: engines are only loaded with the sidecar tdmi-build-engine "
            "writes next to them"
        )
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EngineError(f"engine sidecar {p} is not valid JSON ({e}): rebuild the engine") from None
    return sidecar_from_dict(data, p)


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def check_environment(
    sidecar: EngineSidecar, current: BuildEnvironment, engine: str | Path = "engine"
) -> list[str]:
    """Raise ``EngineError`` if the engine cannot run here; return warnings for harmless differences.

    TensorRT engines are tied to the exact TensorRT release (without version-compatible builds,
    which we do not use) and to the GPU's compute capability.
    """
    built, here = sidecar.environment, current
    name = TARGET_NAMES[sidecar.target]
    bt, ht = _version_tuple(built.tensorrt_version)[:3], _version_tuple(here.tensorrt_version)[:3]
    if bt != ht:
        raise EngineError(
            f"{engine} was built with {name} {built.tensorrt_version} but this machine has {name} "
            f"{here.tensorrt_version}: rebuild it here with tdmi-build-engine"
        )
    if sidecar.target == "tensorrt-rtx":
        # Built for a list of GPUs (possibly on a machine without one); kernels JIT on first run.
        if here.gpu.compute_capability not in sidecar.compute_capabilities:
            raise EngineError(
                f"{engine} was built for compute capabilities {', '.join(sidecar.compute_capabilities)} "
                f"but this GPU is {here.gpu.name} (compute capability {here.gpu.compute_capability}): "
                f"rebuild it with --compute-capability {here.gpu.compute_capability.replace('.', '')}"
            )
        return []
    if built.gpu.compute_capability != here.gpu.compute_capability:
        raise EngineError(
            f"{engine} was built for {built.gpu.name} (compute capability {built.gpu.compute_capability}) "
            f"but this GPU is {here.gpu.name} (compute capability {here.gpu.compute_capability}): "
            "rebuild it on this GPU"
        )
    warnings = []
    if built.gpu.name != here.gpu.name:
        warnings.append(
            f"{engine} was built on {built.gpu.name}, running on {here.gpu.name} (same compute capability "
            f"{here.gpu.compute_capability}); tactics were timed on the other GPU, rebuild for best speed"
        )
    if _version_tuple(built.tensorrt_version) != _version_tuple(here.tensorrt_version):
        warnings.append(
            f"{engine} was built with TensorRT {built.tensorrt_version}, running with {here.tensorrt_version}"
        )
    return warnings


def check_plugin(
    sidecar: EngineSidecar, plugin_version: str, ptx_sha256: str | None, engine: str | Path
) -> list[str]:
    """Differences between the plugin an engine was built with and the one installed here.

    The AOT plugin's kernel is compiled into the engine, so a newer local kernel does not change
    what the engine runs: these are warnings (the engine may be stale), not errors.
    """
    if sidecar.plugin is None or sidecar.plugin.ptx_sha256 is None:
        return []
    notes = []
    if sidecar.plugin.plugin_version != plugin_version:
        notes.append(
            f"{engine} embeds {sidecar.plugin.name} plugin version {sidecar.plugin.plugin_version}, "
            "this toolkit "
            f"provides version {plugin_version}: rebuild the engine to pick up the new kernel"
        )
    elif ptx_sha256 is not None and ptx_sha256 != sidecar.plugin.ptx_sha256:
        notes.append(
            f"{engine} embeds a different {sidecar.plugin.name} kernel (PTX sha256 "
            f"{sidecar.plugin.ptx_sha256[:12]}, "
            f"here {ptx_sha256[:12]}): rebuild the engine to pick up the local kernel"
        )
    return notes
