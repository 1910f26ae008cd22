"""What can be benchmarked here: the backend variants, the machine, and the cache of exported artifacts.

Exporting and quantising a W48 model takes minutes on a CPU, so every artifact the benchmark needs
(weights, FP32 ONNX, the precision variants) is built once and kept in a cache folder keyed by
everything that changes its bytes: the model config, the weights, the toolkit version and the
export settings. A stale artifact can therefore never be benchmarked against a newer reference.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tdmi.benchmarks.memory import MemoryLedger, run_in_child
from tdmi.errors import ConfigError, EngineError, ExportError, TdmiError, UsageError
from tdmi.export.pipeline import (
    RANDOM_SEED,
    ArtifactCache,
    Calibration,
    check_engine,
    default_cache_dir,
)
from tdmi.spec.config import TDMIConfig
from tdmi.utils import sha256_file, source_commit

CHECK_LABEL = "accuracy check (TensorRT-targeted graph)"
if TYPE_CHECKING:
    from tdmi.benchmarks.report import BenchReport
    from tdmi.data.posetrack import MissingFrames


@dataclass(frozen=True)
class VariantSpec:
    """One row kind of the benchmark: which runtime runs which artifact, and why it is there."""

    name: str
    backend: str  # "torch" | "onnxruntime" | "openvino" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "bf16" | "int8"
    device: str  # "cpu" | "cuda"
    artifact: str | None  # cache artifact kind, None for the PyTorch rows and engines
    check_only: bool  # a graph meant for another runtime, run here only to check its accuracy
    description: str


VARIANTS: dict[str, VariantSpec] = {
    v.name: v
    for v in (
        VariantSpec("torch", "torch", "fp32", "cpu", None, False, "PyTorch reference on the CPU"),
        VariantSpec("torch-cuda", "torch", "fp32", "cuda", None, False, "PyTorch reference on the GPU"),
        VariantSpec("ort-fp32", "onnxruntime", "fp32", "cpu", "fp32", False, "ONNX Runtime CPU, FP32"),
        VariantSpec(
            "ort-int8",
            "onnxruntime",
            "int8",
            "cpu",
            "int8-onnxruntime",
            False,
            "ONNX Runtime CPU, INT8 QDQ quantised for ONNX Runtime",
        ),
        VariantSpec(
            "ort-fp16-trtgraph",
            "onnxruntime",
            "fp16",
            "cpu",
            "fp16-tensorrt",
            True,
            "the TensorRT-targeted FP16 graph, run on ONNX Runtime CPU to check its accuracy",
        ),
        VariantSpec(
            "ort-int8-trtgraph",
            "onnxruntime",
            "int8",
            "cpu",
            "int8-tensorrt",
            True,
            "the TensorRT-targeted INT8 Q/DQ graph, run on ONNX Runtime CPU to check its accuracy",
        ),
        VariantSpec(
            "ov-fp32", "openvino", "fp32", "cpu", "ov-fp32", False, "OpenVINO CPU, FP32 IR (decomposed DCN)"
        ),
        VariantSpec(
            "ov-bf16",
            "openvino",
            "bf16",
            "cpu",
            "ov-bf16",
            False,
            "OpenVINO CPU, BF16 inference precision (FP32 where the CPU has no BF16)",
        ),
        VariantSpec(
            "ov-int8",
            "openvino",
            "int8",
            "cpu",
            "ov-int8",
            False,
            "OpenVINO CPU, NNCF INT8 IR (the rest at the CPU's default precision)",
        ),
        VariantSpec(
            "trt", "tensorrt", "engine", "cuda", None, False, "TensorRT engines (--engine or cached)"
        ),
    )
}
ALIASES: dict[str, str] = {
    "pytorch": "torch",
    "torch-cpu": "torch",
    "cuda": "torch-cuda",
    "onnxruntime": "ort-fp32",
    "ort": "ort-fp32",
    "tensorrt": "trt",
    "openvino": "ov-fp32",
    "ov": "ov-fp32",
}
DEFAULT_VARIANTS: tuple[str, ...] = ("torch", "torch-cuda", "ort-fp32", "ort-int8", "trt")
OPENVINO_VARIANTS: tuple[str, ...] = ("ov-fp32", "ov-bf16", "ov-int8")  # in the default job where installed
ALL_VARIANTS: tuple[str, ...] = tuple(VARIANTS)
VARIANT_SETS: dict[str, tuple[str, ...]] = {"default": DEFAULT_VARIANTS, "all": ALL_VARIANTS}


def openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def parse_backends(values: Sequence[str]) -> list[str]:
    """Canonical variant names from ``--backend`` values (comma lists allowed, aliases resolved)."""
    out: list[str] = []
    for value in values:
        for raw in value.split(","):
            name = raw.strip().lower()
            if not name:
                continue
            name = ALIASES.get(name, name)
            if name not in VARIANTS:
                known = ", ".join([*VARIANTS, *ALIASES])
                raise UsageError(f"unknown backend {raw.strip()!r}; choose from: {known}")
            if name not in out:
                out.append(name)
    if not out:
        raise UsageError("no backend given: pass e.g. --backend torch,ort-fp32")
    return out


def variant_set(name: str) -> list[str]:
    """A named set, or a comma list of variant names (``ort-fp32,ort-int8``)."""
    if name == "default" and openvino_installed():
        # OpenVINO rows join the default job where it is installed (before the GPU engines)
        return [*DEFAULT_VARIANTS[:-1], *OPENVINO_VARIANTS, DEFAULT_VARIANTS[-1]]
    if name in VARIANT_SETS:
        return list(VARIANT_SETS[name])
    try:
        return parse_backends([name])
    except (ConfigError, UsageError):
        raise UsageError(
            f"unknown --variants {name!r}; choose a set ({', '.join(VARIANT_SETS)}) or a comma list of: "
            f"{', '.join(VARIANTS)}"
        ) from None


def parse_batches(text: str) -> list[int]:
    """``"1,4"`` -> ``[1, 4]``: positive, without duplicates, in the given order."""
    out: list[int] = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece:
            continue
        try:
            b = int(piece)
        except ValueError:
            raise UsageError(f"--batch must be a comma-separated list of integers, got {text!r}") from None
        if b < 1:
            raise UsageError(f"batch sizes must be positive, got {b}")
        if b not in out:
            out.append(b)
    if not out:
        raise UsageError(f"--batch must list at least one batch size, got {text!r}")
    return out


# ------------------------------------------------------------------------------------------ machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


INT8_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
# BF16 decides OpenVINO's default inference precision (BF16 with these, else FP32) and its speed.
BF16_ISA_FLAGS = ("avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16", "amx_tile")


def cpu_int8_isa(cpuinfo: str | None = None) -> list[str] | None:
    """The CPU's vector extensions that decide INT8 speed (None: not known on this OS).

    Why: ONNX Runtime's INT8 kernels run several times faster with VNNI (measured here: INT8 2.3-2.5x
    over FP32 on an AVX-512 VNNI EPYC, 1.4x on an AVX2-only one), so an INT8 speed-up means little
    without them.
    """
    return _cpu_flags(INT8_ISA_FLAGS, cpuinfo)


def cpu_bf16_isa(cpuinfo: str | None = None) -> list[str] | None:
    """The CPU's BF16 / AMX extensions (None: not known on this OS).

    Why: OpenVINO runs FP32 graphs in BF16 by default only where these exist (AVX-512 BF16, AMX),
    and the BF16 speed-up over FP32 depends on which (AMX tiles are several times AVX-512 BF16's).
    """
    return _cpu_flags(BF16_ISA_FLAGS, cpuinfo)


def _cpu_flags(wanted: Sequence[str], cpuinfo: str | None) -> list[str] | None:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        if line.lower().startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [f for f in wanted if f in flags]
    return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpu_name() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return str(torch.cuda.get_device_name(0))


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), the default thread count of every backend."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """Where the numbers come from: results without the machine they were measured on mean nothing."""
    from tdmi import __version__

    usable = usable_cores()
    versions = {
        "python": platform.python_version(),
        "tdmi-deploy": __version__,
        "torch": _version("torch"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "numpy": _version("numpy"),
        "nvidia-modelopt": _version("nvidia-modelopt"),
        "tensorrt": _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt-cu13"),
        "openvino": _version("openvino"),
        "nncf": _version("nncf"),
    }
    return {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count() or 0,
        "cpu_cores_usable": usable,
        "cpu_int8_isa": cpu_int8_isa(),
        "cpu_bf16_isa": cpu_bf16_isa(),
        "gpu": gpu_name(),
        "platform": platform.platform(),
        "versions": versions,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": source_commit(),
    }


# -------------------------------------------------------------------------------------- availability


def backend_unavailable_reason(spec: VariantSpec) -> str | None:
    """Why this machine cannot run ``spec`` (None when it can)."""
    from tdmi.plugins.availability import tensorrt_available, torch_cuda_available

    if spec.device == "cuda" and spec.backend == "torch":
        avail = torch_cuda_available()
        return None if avail else avail.reason
    if spec.backend == "onnxruntime":
        try:
            from tdmi.plugins.availability import require_onnxruntime

            require_onnxruntime()
        except TdmiError as e:
            return str(e)
        return None
    if spec.backend == "openvino":
        if not openvino_installed():
            return "OpenVINO is not installed: pip install 'tdmi-deploy[openvino]'"
        if spec.precision == "int8":
            import importlib.util

            if importlib.util.find_spec("nncf") is None:
                return "INT8 for OpenVINO needs NNCF: pip install 'tdmi-deploy[openvino-int8]'"
        return None
    if spec.backend == "tensorrt":
        avail = tensorrt_available()
        if not avail:
            return avail.reason
        gpu = torch_cuda_available()
        return None if gpu else gpu.reason
    return None


# ------------------------------------------------------------------------------------------ the job


@dataclass
class BenchOptions:
    """Everything ``tdmi-bench`` can be asked; the defaults are the default job."""

    config: str | None = None  # preset / config JSON; None: the checkpoint's own, else the default preset
    checkpoint: Path | None = None
    backends: list[str] | None = None  # explicit variant names; None: the ``variants`` set
    variants: str = "default"
    engines: list[Path] = field(default_factory=list)
    batches: list[int] = field(default_factory=lambda: [1])
    iters: int = 10
    warmup: int = 2
    time_checks: bool = False
    cache_dir: Path | None = None
    calib_clips: int = 4  # probed one clip and one group of activations at a time (int8_recipes)
    calib_method: str = "auto"  # INT8 ranges: auto (the measured default), max, percentile, entropy
    calib_data: Path | None = None  # PoseTrack folder for calibration; None: built-in synthetic clips
    int8_op_types: tuple[str, ...] | None = None  # INT8 op types to quantize; None: each target's default
    threads: int | None = None
    cuda_graph: bool = False  # TensorRT rows replay a captured CUDA graph per batch size
    # PoseTrack accuracy harness (runs when ``data`` is set)
    data: Path | None = None
    split: str = "val"
    boxes: str = "gt"
    det_thr: float = 0.3
    missing_frames: str = "error"
    max_samples: int | None = None
    eval_batch: int = 8
    pred_dir: Path | None = None
    progress: bool = True
    # task accuracy against ground truth: "synthetic", "none", or "auto" (synthetic with a checkpoint)
    accuracy: str = "auto"
    accuracy_clips: int = 64
    # build missing artifacts in child processes, so export / calibration memory is returned before
    # timing (the default job's peak: BENCHMARKS.md, issue 20); False: in this process (debugging)
    isolate_builds: bool = True


def resolve_bench_config(config: str | None, checkpoint: Path | None) -> TDMIConfig:
    from tdmi.model.checkpoint import read_checkpoint_config
    from tdmi.spec.config import DEFAULT_PRESET, resolve_config

    if config is not None:
        return resolve_config(config)
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise ConfigError(f"checkpoint {checkpoint} not found")
        embedded = read_checkpoint_config(checkpoint)
        if embedded is not None:
            return embedded
    return resolve_config(DEFAULT_PRESET)


class _NoProgress:
    """Stands in for a rich Progress when bars are off (tests, --no-progress)."""

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None

    def advance(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True, highlight=False),
        transient=True,
    )


def benchmark_inputs(config: TDMIConfig, batches: Sequence[int]) -> dict[int, Any]:
    """Batch size -> clips: the built-in sample clip first, then other built-in clips to fill the batch."""
    import numpy as np

    from tdmi.data.sample import sample_clip, sample_clips

    clip, _ = sample_clip(config.input_size, config.num_frames)
    out: dict[int, Any] = {}
    for b in batches:
        if b == 1:
            out[b] = clip
        else:
            more, _ = sample_clips(b - 1, config.input_size, config.num_frames, seed=0)
            out[b] = np.ascontiguousarray(np.concatenate([clip, more], axis=0))
    return out


@dataclass
class _Setup:
    runners: list[Any]
    skipped: list[Any]
    notes: list[str]


def _load_runners(
    opts: BenchOptions, cfg: TDMIConfig, cache: ArtifactCache, selected: list[str], reference: str
) -> _Setup:
    """Build (or find in the cache) every artifact and open one predictor per selected variant."""
    from tdmi.benchmarks.latency import Runner
    from tdmi.benchmarks.report import skipped_row

    setup = _Setup([], [], [])
    calibration = Calibration(cfg, opts.calib_data, opts.calib_clips)
    # Every artifact first (in child processes with ``isolate``), then the predictors: no session or
    # reference model is held while a graph is exported or quantised.
    failed = _prepare_artifacts(opts, cache, selected, calibration)
    try:
        for name in selected:
            if name == "trt":
                _load_engines(opts, cfg, cache, setup)
                continue
            if name in failed:
                spec = VARIANTS[name]
                label = CHECK_LABEL if spec.check_only else ""
                setup.skipped.append(
                    skipped_row(name, spec.backend, spec.precision, spec.device, failed[name], label)
                )
                continue
            opened = _open_variant(VARIANTS[name], opts, cache, calibration, name == reference)
            (setup.runners if isinstance(opened, Runner) else setup.skipped).append(opened)
    except BaseException:  # a later failure must not leave the opened sessions behind
        for r in setup.runners:
            r.close()
        raise
    if any(r.name in VARIANTS and VARIANTS[r.name].artifact not in (None, "fp32") for r in setup.runners):
        source = (
            "the built-in synthetic sample clips (smoke-test calibration; --calib-data for a real one)"
            if opts.calib_data is None
            else str(opts.calib_data)
        )
        from tdmi.export.precision import DEFAULT_CALIBRATION

        how = opts.calib_method
        if how == "auto":
            how = "auto: " + ", ".join(f"{m} for {t}" for t, m in DEFAULT_CALIBRATION.items())
        setup.notes.append(
            f"the FP16 / INT8 graphs are calibrated on {opts.calib_clips} clips from {source}; "
            f"INT8 ranges by {how} (ONNX Runtime: the toolkit's own histograms, see the graph's metadata)"
        )
        if opts.int8_op_types is not None:
            ops = ",".join(opts.int8_op_types) or "ModelOpt's own set"
            setup.notes.append(f"INT8 op types quantized: {ops} (--int8-op-types; default: each target's)")
    return setup


def _prepare_artifacts(
    opts: BenchOptions, cache: ArtifactCache, selected: list[str], calibration: Calibration
) -> dict[str, str]:
    """Make (or find) every artifact the selected rows need, dependencies first.

    Returns variant name -> why its precision variant could not be made here (a skipped row, not
    a crash); the weights and the FP32 graph cannot fail quietly.
    """
    specs = [
        VARIANTS[n]
        for n in selected
        if n in VARIANTS
        and VARIANTS[n].backend != "tensorrt"
        and backend_unavailable_reason(VARIANTS[n]) is None
    ]
    if specs:
        cache.weights()
    if any(s.artifact is not None for s in specs):
        cache.fp32_onnx()
    failed: dict[str, str] = {}
    for spec in specs:
        if spec.artifact in (None, "fp32"):
            continue
        try:
            cache.variant(
                spec.artifact,
                opts.calib_clips,
                calibration,
                opts.calib_data,
                opts.calib_method,
                opts.int8_op_types,  # FP16 variants ignore it
            )
        except (ImportError, ExportError) as e:
            failed[spec.name] = "not built: " + (str(e).splitlines() or [type(e).__name__])[0][:200]
    return failed


def _ort_options(threads: int | None) -> dict[str, Any]:
    """Session options for the ONNX Runtime rows.

    Interleaved timing needs ORT's worker threads to sleep after a run: spinning ones steal the
    cores from the backend timed next (measured: PyTorch calls right after ORT ones slowed many
    times over on a 2-core machine). Passed only where the runtime predictor accepts it.
    """
    import inspect

    from tdmi.runtime.onnxruntime_backend import OnnxRuntimePredictor

    options: dict[str, Any] = {"threads": threads} if threads else {}
    if "allow_spinning" in inspect.signature(OnnxRuntimePredictor.__init__).parameters:
        options["allow_spinning"] = False
    return options


def _open_variant(
    spec: VariantSpec, opts: BenchOptions, cache: ArtifactCache, calibration: Callable[[], Any], is_ref: bool
) -> Any:
    """A ``Runner`` for one variant, or its skipped row saying why it cannot run here.

    The reference is never skipped: without it no row can be compared, so its absence is an error.
    """
    from tdmi import runtime
    from tdmi.benchmarks.latency import Runner
    from tdmi.benchmarks.report import skipped_row
    from tdmi.errors import BackendUnavailableError

    label = CHECK_LABEL if spec.check_only else ""

    def skipped(note: str) -> Any:
        return skipped_row(spec.name, spec.backend, spec.precision, spec.device, note, label)

    reason = backend_unavailable_reason(spec)
    if reason is not None:
        if is_ref:
            raise BackendUnavailableError(f"the reference backend {spec.name} cannot run here: {reason}")
        return skipped(reason)
    ort_options = _ort_options(opts.threads)
    try:
        if spec.backend == "openvino":
            assert spec.artifact is not None
            try:
                path = cache.variant(
                    spec.artifact,
                    opts.calib_clips,
                    calibration,
                    opts.calib_data,
                    opts.calib_method if opts.calib_method in ("auto", "max", "percentile") else "auto",
                    opts.int8_op_types if spec.precision == "int8" else None,
                )
            except (ImportError, ExportError) as e:
                return skipped("not built: " + (str(e).splitlines() or [type(e).__name__])[0][:200])
            predictor = runtime.load(
                path, backend="openvino", device="cpu", threads=opts.threads, performance_hint="LATENCY"
            )
            return Runner(
                spec.name,
                spec.backend,
                predictor.precision,  # read back from OpenVINO: bf16 only where the CPU runs it
                spec.device,
                predictor,
                label=label,
                notes=[f"OpenVINO inference precision {predictor.describe()['inference_precision']}"],
            )
        if spec.backend == "torch":
            predictor = runtime.load(cache.weights(), backend="torch", device=spec.device)
        elif spec.artifact == "fp32":
            predictor = runtime.load(cache.fp32_onnx(), backend="onnxruntime", device="cpu", **ort_options)
        else:
            assert spec.artifact is not None
            try:
                path = cache.variant(
                    spec.artifact,
                    opts.calib_clips,
                    calibration,
                    opts.calib_data,
                    opts.calib_method,
                    opts.int8_op_types,  # FP16 variants ignore it
                )
            except (ImportError, ExportError) as e:
                # A precision variant that cannot be made here is a row with the reason, not a crash.
                return skipped("not built: " + (str(e).splitlines() or [type(e).__name__])[0][:200])
            predictor = runtime.load(path, backend="onnxruntime", device="cpu", **ort_options)
    except BackendUnavailableError as e:
        if is_ref:
            raise
        return skipped(str(e))
    return Runner(
        spec.name,
        spec.backend,
        spec.precision,
        spec.device,
        predictor,
        label=label,
        check_only=spec.check_only,
    )


def _load_engines(opts: BenchOptions, cfg: TDMIConfig, cache: ArtifactCache, setup: _Setup) -> None:
    """TensorRT rows: engines given with ``--engine`` (bad ones are errors) and any in the cache folder."""
    from tdmi import runtime
    from tdmi.benchmarks.latency import Runner
    from tdmi.benchmarks.report import skipped_row
    from tdmi.errors import BackendUnavailableError

    explicit = [Path(e).resolve() for e in opts.engines]
    found = [e.resolve() for e in cache.engines() if e.resolve() not in explicit]
    reason = backend_unavailable_reason(VARIANTS["trt"])
    if not explicit and not found:
        why = reason or "no engine given (--engine) or cached; build one with tdmi-build-engine"
        setup.skipped.append(skipped_row("trt", "tensorrt", "—", "cuda", why))
        return
    ours: dict[str, str] | None = None
    used: set[str] = set()
    for path in [*explicit, *found]:
        try:
            sidecar = check_engine(path, cfg)
        except EngineError as e:
            if path in explicit:
                raise
            setup.skipped.append(skipped_row(f"trt:{path.name}", "tensorrt", "?", "cuda", str(e)))
            continue
        name = f"trt-{sidecar.precision}"
        if name in used:
            name = f"trt-{sidecar.precision}:{path.stem}"
        used.add(name)
        if reason is not None:
            setup.skipped.append(skipped_row(name, "tensorrt", sidecar.precision, "cuda", reason))
            continue
        try:
            predictor = runtime.load(path, backend="tensorrt", device="cuda", cuda_graph=opts.cuda_graph)
        except (BackendUnavailableError, EngineError) as e:
            if path in explicit and isinstance(e, EngineError):
                raise
            setup.skipped.append(skipped_row(name, "tensorrt", sidecar.precision, "cuda", str(e)))
            continue
        notes = [f"engine {path.name}", *getattr(predictor, "warnings", [])]
        if ours is None:
            ours = {sha256_file(p): p.name for p in cache.folder.glob("*.onnx")}
        if sidecar.source_onnx_sha256 not in ours:
            notes.append("built from an ONNX file other than this cache's exports: its weights may differ")
        setup.runners.append(Runner(name, "tensorrt", sidecar.precision, "cuda", predictor, notes=notes))


def run_bench(opts: BenchOptions, console: Any | None = None) -> BenchReport:
    """The whole job: artifacts, predictors, interleaved latency, agreement, optional PoseTrack mAP."""
    from tdmi.benchmarks.accuracy import load_posetrack, run_posetrack
    from tdmi.benchmarks.latency import NOISY_LOAD, LoadProbe, calls_per_batch, measure
    from tdmi.benchmarks.report import BenchReport, accuracy_rows, latency_rows, skipped_accuracy_row

    cfg = resolve_bench_config(opts.config, opts.checkpoint)
    if opts.missing_frames not in ("error", "nearest"):
        raise UsageError(f"--missing-frames must be 'error' or 'nearest', got {opts.missing_frames!r}")
    if opts.iters < 1 or opts.warmup < 0:
        raise UsageError(f"--iters must be >= 1 and --warmup >= 0, got {opts.iters} and {opts.warmup}")
    if opts.calib_method not in ("auto", "max", "percentile", "entropy"):
        raise UsageError(
            f"--calib-method must be auto, max, percentile or entropy, got {opts.calib_method!r}"
        )
    if opts.calib_clips < 1:
        raise UsageError(f"--calib-clips must be positive, got {opts.calib_clips}")
    if opts.int8_op_types is not None:
        from tdmi.export.int8_recipes import check_op_types

        try:
            check_op_types(opts.int8_op_types)
        except ExportError as e:
            raise UsageError(f"--int8-op-types: {e}") from None
    from tdmi.benchmarks.task_accuracy import ACCURACY_CHOICES

    if opts.accuracy not in ACCURACY_CHOICES:
        raise UsageError(f"--accuracy must be one of {', '.join(ACCURACY_CHOICES)}, got {opts.accuracy!r}")
    if opts.accuracy_clips < 1:
        raise UsageError(f"--accuracy-clips must be positive, got {opts.accuracy_clips}")
    selected = list(opts.backends) if opts.backends else variant_set(opts.variants)
    if opts.engines and "trt" not in selected:
        selected.append("trt")
    for engine in opts.engines:  # bad input fails before minutes of exporting
        check_engine(engine, cfg)
    data = None
    if opts.data is not None:
        if opts.pred_dir is None:
            raise ConfigError("the accuracy harness needs a folder for its predictions (pred_dir)")
        data = load_posetrack(
            opts.data,
            opts.split,
            opts.boxes,
            opts.det_thr,
            cast("MissingFrames", opts.missing_frames),
            opts.max_samples,
        )
    cuda_ok = backend_unavailable_reason(VARIANTS["torch-cuda"]) is None
    reference = "torch-cuda" if cuda_ok and "torch-cuda" in selected else "torch"
    notes: list[str] = []
    if reference not in selected:
        notes.append(f"added {reference}: every row is compared with the PyTorch reference")
    selected = [reference, *[s for s in selected if s != reference]]

    cache = ArtifactCache.open(opts.cache_dir or default_cache_dir(), cfg, opts.checkpoint)
    cache.progress = opts.progress
    memory = MemoryLedger()
    if opts.isolate_builds:
        cache.isolate = lambda what, fn, *args: run_in_child(what, memory, fn, *args)
    # Every CPU backend gets the same intra-op thread count (torch's and ORT's defaults differ).
    threads = opts.threads or usable_cores()
    if threads < 1:
        raise UsageError(f"--threads must be positive, got {threads}")
    opts = dataclasses.replace(opts, threads=threads)
    import torch

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    setup = _load_runners(opts, cfg, cache, selected, reference)
    try:
        inputs = benchmark_inputs(cfg, opts.batches)
        with _progress(opts.progress) as bar:
            total = len(inputs) * calls_per_batch(setup.runners, opts.iters, opts.warmup, opts.time_checks)
            task = bar.add_task("timing", total=total)
            with LoadProbe() as load:
                measurements = measure(
                    setup.runners,
                    inputs,
                    opts.iters,
                    opts.warmup,
                    opts.time_checks,
                    advance=lambda name: bar.update(task, advance=1, description=f"timing {name}"),
                )
            results = None
            if data is not None:
                assert opts.pred_dir is not None
                clips_task = bar.add_task("PoseTrack clips", total=len(data.samples) * len(setup.runners))
                results = run_posetrack(
                    setup.runners,
                    data,
                    cfg,
                    opts.pred_dir,
                    reference,
                    opts.eval_batch,
                    advance=lambda name, n: bar.update(
                        clips_task, advance=n, description=f"PoseTrack {name}"
                    ),
                )
        rows = latency_rows(measurements, reference, load.others) + setup.skipped
        task = _task_accuracy(opts, cfg, cache, setup.runners, reference, measurements)
    finally:
        torch.set_num_threads(torch_threads)
        for r in setup.runners:
            r.close()
    if cache.checkpoint is None:
        weights = f"random (seed {RANDOM_SEED}, untrained)"
    else:
        weights = f"{cache.checkpoint} (sha256 {sha256_file(cache.checkpoint)[:12]})"
    if cache.built:
        notes.append(f"built into the cache this run: {', '.join(cache.built)}")
    notes.extend(setup.notes)
    if load.others is not None and load.others > NOISY_LOAD and threads > 1:
        notes.append(
            f"other processes used {100 * load.others:.0f}% of the CPUs while timing: with {threads} threads "
            "per backend, torch's thread pool stalls under contention (measured in BENCHMARKS.md: speed-ups "
            "of 70-240x instead of ~3.3x); --threads 1 keeps the ratios steady on a busy machine"
        )
    backends = {r.backend for r in setup.runners}
    if {"torch", "onnxruntime"} <= backends and "allow_spinning" not in _ort_options(None):
        notes.append(
            "ONNX Runtime's worker threads spin after each run (this runtime cannot turn that off): on a "
            "machine with few cores the row timed right after an ORT row is slowed by it"
        )
    from tdmi.benchmarks.report import best_cpu_variant

    if any(r.backend == "openvino" and r.precision.startswith("int8") for r in setup.runners):
        method = opts.calib_method if opts.calib_method in ("max", "percentile") else "max (NNCF min/max)"
        notes.append(
            f"OpenVINO INT8: NNCF post-training quantization (performance preset) on the same calibration "
            f"clips, ranges by {method}, nothing kept in higher precision (tdmi-export openvino --max-drop "
            "searches a recipe)"
        )
    return BenchReport(
        machine=machine_info(),
        config=cfg.to_dict(),
        weights=weights,
        random_weights=cache.random_weights,
        reference=reference,
        settings={
            "input": "built-in sample clip (tdmi.data.sample)",
            "batches": list(opts.batches),
            "iters": opts.iters,
            "warmup": opts.warmup,
            "variants": opts.variants if not opts.backends else None,
            "backends": selected,
            "time_checks": opts.time_checks,
            "calib_clips": opts.calib_clips,
            "calib_method": opts.calib_method,
            "int8_op_types": None if opts.int8_op_types is None else list(opts.int8_op_types),
            "calib_data": str(opts.calib_data) if opts.calib_data else "built-in sample clips",
            "threads": opts.threads,
            "load": {"others": load.others, "loadavg": load.loadavg},
            "ort_spinning_off": "allow_spinning" in _ort_options(None),
            "cuda_graph": opts.cuda_graph,
            "cache": str(cache.folder),
        },
        latency=rows,
        accuracy=(
            accuracy_rows(results, reference) + [skipped_accuracy_row(r) for r in setup.skipped]
            if results is not None
            else None
        ),
        dataset=data.describe() if data is not None else None,
        notes=notes,
        task_accuracy=task.rows if task is not None else None,
        task_dataset=task.dataset if task is not None else None,
        memory=memory.to_dict(),
        best_cpu=best_cpu_variant(rows, task.rows if task is not None else None),
    )


def _task_accuracy(
    opts: BenchOptions,
    cfg: TDMIConfig,
    cache: ArtifactCache,
    runners: list[Any],
    reference: str,
    measurements: list[Any],
) -> Any:
    """``--accuracy synthetic``: every runner scored against ground truth, beside its speed-up."""
    from tdmi.benchmarks.task_accuracy import run_synthetic_accuracy, speedups_at_batch1, synthetic_set

    wanted = opts.accuracy == "synthetic" or (opts.accuracy == "auto" and not cache.random_weights)
    if not wanted:
        return None
    data = synthetic_set(cfg, opts.accuracy_clips)
    speedups, baseline = speedups_at_batch1(measurements, reference=reference)
    with _progress(opts.progress) as bar:
        task = bar.add_task("synthetic accuracy", total=data.size * len(runners))
        result = run_synthetic_accuracy(
            runners,
            data,
            reference,
            batch=1,
            speedups=speedups,
            advance=lambda name, n: bar.update(task, advance=n, description=f"synthetic accuracy {name}"),
        )
    result.dataset["speedup_baseline"] = baseline
    result.dataset["speedup_batch"] = min(opts.batches)
    if cache.random_weights:
        result.dataset["warning"] = "random weights: PCK near zero, drops compare noise"
    return result
