"""ONNX -> TensorRT engine: precision variant, fused rewrite, pre-flight, strongly typed build, sidecar.

One pipeline, two targets: ``tensorrt`` (data-centre TensorRT, built on the GPU it runs on) and
``tensorrt-rtx`` (TensorRT for RTX: same parser and builder API, engines for a list of compute
capabilities built on any machine, GPU or not; kernels are compiled on the GPU at first run).

TensorRT 11 has no precision builder flags: every network is strongly typed, so the precision
lives in the ONNX file (an FP16-converted graph, or explicit Q/DQ for INT8) and the build only
chooses kernels. Everything up to the parser (conversion, fusion, pre-flight) runs without
TensorRT, which is what ``--onnx-only`` ships; the TensorRT part is kept thin and is written
against the TensorRT 11 Python API (10.9+ where it costs nothing: the STRONGLY_TYPED flag).
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import onnx

from tdmi.artifacts.sidecar import (
    INPUT_NAME,
    PRECISIONS,
    TARGETS,
    BatchProfile,
    BuildEnvironment,
    EngineSidecar,
    GpuInfo,
    PluginInfo,
    TensorInfo,
    sidecar_path,
)
from tdmi.errors import BackendUnavailableError, ConfigError, EngineError, ExportError
from tdmi.export.dcn_lowering import lower_deform_conv
from tdmi.export.preflight import DEFAULT_TRT_VERSION, PreflightReport, check_onnx, config_from_metadata
from tdmi.plugins import availability
from tdmi.plugins.availability import probe_environment
from tdmi.plugins.temporal_diff import SPEC
from tdmi.utils import atomic_path, sha256_file, write_bytes_atomic

# Default profile for a dynamic-batch graph: one to a crowd of people per frame.
DEFAULT_DYNAMIC_PROFILE = BatchProfile(1, 4, 16)
AUTO_CALIB_CLIPS = 8  # clips for FP16 conversion checks when no --calib is given
INSTALL_HINT = " (or pass --onnx-only to write the final ONNX here and build the engine on the GPU machine)"


def require_tensorrt() -> Any:
    """TensorRT for building, or one line saying what is missing (and the --onnx-only way out)."""
    return availability.require_tensorrt(INSTALL_HINT)


DeformConvForm = Literal["native", "decomposed"]
DEFORM_CONV_FORMS: tuple[DeformConvForm, ...] = get_args(DeformConvForm)


def default_target() -> str:
    """The target a build gets without ``--target``: whichever is installed, TensorRT first."""
    from tdmi.plugins.availability import tensorrt_available
    from tdmi.plugins.rtx import rtx_available

    if tensorrt_available() or not rtx_available():
        return "tensorrt"
    return "tensorrt-rtx"


def parse_compute_capabilities(text: str) -> tuple[int, ...]:
    """``"80,86,8.9,sm_120"`` -> ``(80, 86, 89, 120)``."""
    out = []
    for part in (p.strip().lower().removeprefix("sm_").removeprefix("sm") for p in text.split(",")):
        if not part:
            continue
        digits = part.replace(".", "")
        if not digits.isdigit():
            raise ConfigError(f"--compute-capability takes numbers such as 80,86,89,120; got {part!r}")
        out.append(int(digits))
    if not out:
        raise ConfigError("--compute-capability needs at least one value, e.g. 80,86,89,120")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class EngineBuildOptions:
    """Everything that shapes an engine; stored in its sidecar."""

    precision: str = "fp32"
    calib: Path | None = None  # PoseTrack folder or a CalibrationSet .npz
    profile: BatchProfile | None = None  # None: from the ONNX (static batch) or DEFAULT_DYNAMIC_PROFILE
    workspace_gb: float = 4.0
    timing_cache: Path | None = None
    opt_level: int = 3
    fuse: bool = True
    trt_version: str = DEFAULT_TRT_VERSION  # pre-flight target when TensorRT is not installed
    target: str = "tensorrt"  # or "tensorrt-rtx"
    compute_capabilities: tuple[int, ...] = ()  # RTX only; () -> DEFAULT_COMPUTE_CAPABILITIES
    deform_conv: str | None = None  # None: native for TensorRT, decomposed for TensorRT-RTX

    def __post_init__(self) -> None:
        from tdmi.plugins.rtx import COMPUTE_CAPABILITIES, DEFAULT_COMPUTE_CAPABILITIES

        if self.target not in TARGETS:
            raise ConfigError(f"unknown target {self.target!r}: use tensorrt or tensorrt-rtx")
        if self.deform_conv is not None and self.deform_conv not in DEFORM_CONV_FORMS:
            raise ConfigError(f"--deform-conv must be native or decomposed, got {self.deform_conv!r}")
        if self.target == "tensorrt":
            if self.compute_capabilities:
                raise ConfigError(
                    "--compute-capability is for --target tensorrt-rtx: "
                    "TensorRT builds for the GPU it runs on"
                )
        else:
            bad = [c for c in self.compute_capabilities if c not in COMPUTE_CAPABILITIES]
            if bad:
                known = ", ".join(map(str, COMPUTE_CAPABILITIES))
                hopper = " (Hopper, SM90, is not a TensorRT-RTX GPU)" if 90 in bad else ""
                raise ConfigError(
                    f"unsupported compute capability {', '.join(map(str, bad))}: TensorRT-RTX builds for "
                    f"{known}{hopper}"
                )
            if not self.compute_capabilities:
                object.__setattr__(self, "compute_capabilities", DEFAULT_COMPUTE_CAPABILITIES)
            if self.timing_cache is not None:
                raise ConfigError(
                    "--timing-cache is for --target tensorrt: TensorRT-RTX times no tactics at build time "
                    "(kernels are compiled on the GPU at first run and kept in the runtime cache)"
                )
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}: use fp32, fp16 or int8")
        if not 0 <= self.opt_level <= 5:
            raise ConfigError(
                f"--opt-level must be 0..5 (TensorRT builder optimisation level), got {self.opt_level}"
            )
        if not self.workspace_gb > 0:
            raise ConfigError(f"--workspace must be a positive number of GiB, got {self.workspace_gb}")
        if self.precision == "int8" and self.calib is None:
            raise ConfigError(
                "INT8 needs calibration data: pass --calib with a PoseTrack folder, or a .npz made by "
                "'tdmi-export calib --config NAME --data POSETRACK_ROOT -o calib.npz'"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["calib"] = str(self.calib) if self.calib else None
        d["timing_cache"] = str(self.timing_cache) if self.timing_cache else None
        d["profile"] = str(self.profile) if self.profile else None
        d["compute_capabilities"] = list(self.compute_capabilities)
        d["deform_conv"] = self.resolved_deform_conv
        return d

    @property
    def resolved_deform_conv(self) -> str:
        if self.deform_conv is not None:
            return self.deform_conv
        return "decomposed" if self.target == "tensorrt-rtx" else "native"


@dataclass
class PreparedOnnx:
    """The graph TensorRT will parse, and how it was made."""

    model: onnx.ModelProto
    config: Any  # TDMIConfig
    precision: str
    fused: bool
    profile: BatchProfile
    source_sha256: str
    report: PreflightReport
    steps: list[str] = field(default_factory=list)

    @property
    def has_plugin(self) -> bool:
        return any(n.domain == SPEC.domain and n.op_type == SPEC.op_type for n in self.model.graph.node)


@dataclass(frozen=True)
class EngineBuildResult:
    engine: Path
    sidecar: Path
    metadata: EngineSidecar
    report: PreflightReport


# -- TensorRT-free part ----------------------------------------------------------------------------


def _load_onnx(path: Path) -> onnx.ModelProto:
    from tdmi.export.metadata import load_onnx_checked

    return load_onnx_checked(path)


def profile_for(model: onnx.ModelProto, requested: BatchProfile | None) -> BatchProfile:
    """The requested profile, or one that fits the graph: static batch N -> N:N:N."""
    if requested is not None:
        return requested
    for vi in model.graph.input:
        if vi.name == INPUT_NAME:
            dims = vi.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
                b = int(dims[0].dim_value)
                return BatchProfile(b, b, b)
    return DEFAULT_DYNAMIC_PROFILE


def load_calibration(calib: Path | None, config: Any, num_clips: int = 32) -> Any:
    """A ``CalibrationSet`` from a saved .npz, a PoseTrack folder, or (None) the built-in sample clip."""
    from tdmi.export import CalibrationSet, build_calibration_set

    if calib is None:
        return build_calibration_set(config, None, num_clips=AUTO_CALIB_CLIPS)
    calib = Path(calib)
    if calib.suffix == ".npz":
        if not calib.is_file():
            raise ExportError(f"calibration file {calib} not found")
        return CalibrationSet.load(calib)
    if calib.is_dir():
        return build_calibration_set(config, calib, num_clips=num_clips)
    raise ExportError(f"--calib {calib} is neither a calibration .npz nor a PoseTrack folder")


def prepare_onnx(src: str | Path, options: EngineBuildOptions, workdir: Path) -> PreparedOnnx:
    """Precision variant, then the fused rewrite, then the pre-flight check (nothing is written)."""
    src = Path(src)
    model = _load_onnx(src)
    config = config_from_metadata(model)
    if config is None:
        raise ExportError(
            f"{src} carries no tdmi model config in its metadata: export it with `tdmi-export` first"
        )
    from tdmi.export.metadata import check_graph_io, read_metadata

    check_graph_io(model, config, src)
    source_precision = read_metadata(model)["precision"]
    precision = options.precision
    steps = [f"source {src.name} ({source_precision})"]
    current = src
    if options.resolved_deform_conv == "decomposed":
        # Before any precision conversion, so FP16/INT8 treat the standard ops like every other op.
        lowered_model, lowered = lower_deform_conv(model)
        if lowered:
            model = lowered_model
            current = workdir / f"{src.stem}.dcn-decomposed.onnx"
            onnx.save(model, str(current))
            steps.append(f"DeformConv decomposed ({lowered} nodes)")
        if config.deform_conv != "decomposed":
            config = config.replace(deform_conv="decomposed")
    if source_precision != "fp32":
        # An already converted export is used as it is; converting it again would compound the loss.
        if precision not in ("fp32", source_precision):
            raise ExportError(
                f"{src} is already {source_precision}: start from the FP32 export to build {precision}"
            )
        precision = source_precision
    elif precision != "fp32":
        from tdmi.export import convert_fp16, quantize_int8

        calib = load_calibration(options.calib, config)
        out = workdir / f"{src.stem}.{precision}.onnx"
        if precision == "fp16":
            result = convert_fp16(current, out, calib)
        else:
            result = quantize_int8(current, out, calib, target="tensorrt")
        current = Path(getattr(result, "path", out))
        steps.append(f"{precision} variant")
    model = _load_onnx(current) if steps[-1].endswith("variant") else model
    fused = False
    if options.fuse:
        from tdmi.export import fuse_temporal_diff

        model = fuse_temporal_diff(model)
        fused = any(n.domain == SPEC.domain for n in model.graph.node)
        steps.append("fused TemporalDiff" if fused else "fuse: no temporal-difference pattern found")
    profile = profile_for(model, options.profile)
    report = check_onnx(
        model, trt_version=options.trt_version, profile=profile, config=config, target=options.target
    )
    return PreparedOnnx(
        model=model,
        config=config,
        precision=precision,
        fused=fused,
        profile=profile,
        source_sha256=sha256_file(src),
        report=report,
        steps=steps,
    )


def save_onnx_atomic(model: onnx.ModelProto, output: str | Path) -> None:
    with atomic_path(output) as tmp:
        onnx.save(model, str(tmp))


def write_final_onnx(src: str | Path, output: str | Path, options: EngineBuildOptions) -> PreparedOnnx:
    """``--onnx-only``: the exact graph the engine would be built from, checked, with no TensorRT."""
    from tdmi.export.onnx_export import check_writable

    check_writable(Path(output))
    with tempfile.TemporaryDirectory(prefix="tdmi-engine-") as tmp:
        prepared = prepare_onnx(src, options, Path(tmp))
    prepared.report.raise_if_errors()
    save_onnx_atomic(prepared.model, output)
    return prepared


# -- TensorRT part ---------------------------------------------------------------------------------


def load_target(target: str) -> tuple[Any, BuildEnvironment]:
    """The bindings module for a target and the environment an engine built now records.

    TensorRT needs a GPU and driver here (it builds for the GPU it runs on); TensorRT-RTX does
    not: without a GPU its builder compiles for the requested compute capabilities only.
    """
    if target == "tensorrt":
        trt = require_tensorrt()
        return trt, probe_environment(trt)
    from tdmi.plugins.availability import cuda_gpu_available
    from tdmi.plugins.rtx import import_rtx

    trt = import_rtx()
    if cuda_gpu_available():
        try:
            env = probe_environment(trt)
            return trt, env
        except BackendUnavailableError:
            pass  # no cuda-python: the build does not need it
    none = "none"
    return trt, BuildEnvironment(
        tensorrt_version=str(trt.__version__),
        cuda_runtime_version=none,
        cuda_driver_version=none,
        gpu=GpuInfo(name="none (CPU-only build)", compute_capability=none),
    )


def parser_error_message(parser: Any, path: Path | str) -> str:
    """All parser errors on one line: node, op and the parser's own description."""
    parts = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node_name = err.node_name() if hasattr(err, "node_name") else ""
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        where = f"node {node_name!r}" if node_name else f"node #{err.node()}"
        parts.append(f"{where} ({op or '?'}): {err.desc()}")
    detail = "; ".join(parts) or "no error detail reported"
    return f"TensorRT's ONNX parser rejected {path}: {detail}"


def _dtype_name(trt: Any, dtype: Any) -> str:
    try:
        import numpy as np

        return np.dtype(trt.nptype(dtype)).name
    except (TypeError, KeyError):
        return str(dtype).rsplit(".", 1)[-1].lower()


def _tensor_infos(trt: Any, tensors: list[Any]) -> tuple[TensorInfo, ...]:
    return tuple(
        TensorInfo(t.name, tuple(int(d) for d in t.shape), _dtype_name(trt, t.dtype)) for t in tensors
    )


def _ptx_sha256() -> str | None:
    from tdmi.plugins import ptx, trt_plugin

    return ptx.kernel_sha256(trt_plugin.aot_ptx_arch())


def _build_serialized(
    trt: Any, onnx_path: Path, prepared: PreparedOnnx, options: EngineBuildOptions, verbose: bool
) -> tuple[bytes, bytes | None, tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    logger = trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)
    rtx = options.target == "tensorrt-rtx"
    if not rtx:
        # TensorRT's own plugins: DeformConv is imported as its ModulatedDeformConv2d plugin.
        trt.init_libnvinfer_plugins(logger, "")
    if prepared.has_plugin:
        if rtx:
            from tdmi.plugins.rtx_plugin import register_rtx_plugins

            register_rtx_plugins()  # also makes sure creating it cannot abort the process
        else:
            from tdmi.plugins.trt_plugin import register_plugins

            register_plugins()
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # required on 10.x; accepted (always on) in 11.x
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineError(parser_error_message(parser, onnx_path))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gb * (1 << 30)))
    config.builder_optimization_level = options.opt_level
    if rtx:
        config.num_compute_capabilities = len(options.compute_capabilities)
        for i, cc in enumerate(options.compute_capabilities):
            config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{cc}"), i)
    if not rtx:  # TensorRT-RTX deprecates timing caches (no-ops): nothing is timed at build time
        cache_bytes = b""
        if options.timing_cache is not None and Path(options.timing_cache).is_file():
            cache_bytes = Path(options.timing_cache).read_bytes()
        cache = config.create_timing_cache(cache_bytes)
        if cache is None:
            raise EngineError(f"timing cache {options.timing_cache} is unreadable: delete it and build again")
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            raise EngineError(
                f"timing cache {options.timing_cache} was made by another TensorRT version or GPU: "
                "delete it or pass another --timing-cache"
            )

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    frames = next((t for t in inputs if t.name == INPUT_NAME), None)
    if frames is None:
        raise EngineError(
            f"the parsed network has no input '{INPUT_NAME}' (inputs: {[t.name for t in inputs]})"
        )
    rest = tuple(int(d) for d in frames.shape)[1:]
    p = prepared.profile
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (p.min, *rest), (p.opt, *rest), (p.max, *rest))
    config.add_optimization_profile(profile)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(
            "TensorRT could not build the engine (its log above says why; re-run with --verbose for more)"
        )
    new_cache = None
    if options.timing_cache is not None:
        new_cache = bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(memoryview(plan)), new_cache, _tensor_infos(trt, inputs), _tensor_infos(trt, outputs)


def build_engine(
    src: str | Path, output: str | Path, options: EngineBuildOptions, *, verbose: bool = False
) -> EngineBuildResult:
    """The full build; TensorRT and a GPU are checked first, so nothing is converted or written without."""
    from tdmi import __version__
    from tdmi.export.onnx_export import check_writable

    trt, environment = load_target(options.target)
    options = dataclasses.replace(options, trt_version=str(trt.__version__))
    output = Path(output)
    check_writable(output)  # before minutes of building, not after
    with tempfile.TemporaryDirectory(prefix="tdmi-engine-") as tmp:
        prepared = prepare_onnx(src, options, Path(tmp))
        prepared.report.raise_if_errors()
        final_onnx = Path(tmp) / "final.onnx"
        onnx.save(prepared.model, str(final_onnx))
        t0 = time.perf_counter()
        plan, cache, inputs, outputs = _build_serialized(trt, final_onnx, prepared, options, verbose)
        build_seconds = round(time.perf_counter() - t0, 3)
    plugin = None
    if prepared.has_plugin:
        plugin = PluginInfo(
            name=SPEC.op_type,
            namespace=SPEC.domain,
            plugin_version=SPEC.plugin_version,
            # RTX: a Python IPluginV3 picks the PTX for the GPU at run time; nothing is embedded.
            ptx_sha256=None if options.target == "tensorrt-rtx" else _ptx_sha256(),
        )
    metadata = EngineSidecar(
        model_config=prepared.config.to_dict(),
        precision=prepared.precision,
        inputs=inputs,
        outputs=outputs,
        profile=prepared.profile,
        environment=environment,
        plugin=plugin,
        source_onnx_sha256=prepared.source_sha256,
        engine_sha256=hashlib.sha256(plan).hexdigest(),
        toolkit_version=f"tdmi-deploy {__version__}",
        build_options={
            **options.to_dict(),
            "fused": prepared.fused,
            "steps": prepared.steps,
            "build_seconds": build_seconds,  # parse + build on this machine, for the record
        },
        target=options.target,
        compute_capabilities=tuple(f"{c // 10}.{c % 10}" for c in options.compute_capabilities),
    )
    side = sidecar_path(output)
    # Engine and sidecar appear together or not at all.
    with atomic_path(output) as engine_tmp, atomic_path(side) as side_tmp:
        engine_tmp.write_bytes(plan)
        side_tmp.write_text(metadata.to_json())
    if cache is not None and options.timing_cache is not None:
        write_bytes_atomic(options.timing_cache, cache)
    return EngineBuildResult(engine=output, sidecar=side, metadata=metadata, report=prepared.report)
