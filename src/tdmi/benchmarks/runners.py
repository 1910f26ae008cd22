"""The benchmark's rows, opened: every artifact built (or found in the cache), one predictor per variant.

A variant that cannot run here becomes a skipped row with the reason, never a crash; only the
PyTorch reference must open, since without it no row can be compared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from tdmi.benchmarks.options import BenchOptions
from tdmi.benchmarks.variants import CHECK_LABEL, VARIANTS, VariantSpec, backend_unavailable_reason
from tdmi.errors import EngineError, ExportError
from tdmi.export.pipeline import ArtifactCache, Calibration, check_engine
from tdmi.spec.config import TDMIConfig
from tdmi.utils import sha256_file


def _not_built(e: BaseException) -> str:
    """A precision variant that cannot be made here: the first line of why, for its skipped row."""
    return "not built: " + (str(e).splitlines() or [type(e).__name__])[0][:200]


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
            failed[spec.name] = _not_built(e)
    return failed


def _ort_options(threads: int | None) -> dict[str, Any]:
    """Session options for the ONNX Runtime rows.

    Interleaved timing needs ORT's worker threads to sleep after a run: spinning ones steal the
    cores from the backend timed next (measured: PyTorch calls right after ORT ones slowed many
    times over on a 2-core machine).
    """
    options: dict[str, Any] = {"threads": threads} if threads else {}
    options["allow_spinning"] = False
    return options


def _variant_path(
    spec: VariantSpec,
    opts: BenchOptions,
    cache: ArtifactCache,
    calibration: Callable[[], Any],
    method: str,
    op_types: tuple[str, ...] | None,
) -> Path | str:
    """The cached precision variant of a row, or why it could not be made here.

    A precision variant that cannot be made here is a row with the reason, not a crash.
    """
    assert spec.artifact is not None
    try:
        return cache.variant(spec.artifact, opts.calib_clips, calibration, opts.calib_data, method, op_types)
    except (ImportError, ExportError) as e:
        return _not_built(e)


def _open_openvino(
    spec: VariantSpec, opts: BenchOptions, cache: ArtifactCache, calibration: Callable[[], Any], label: str
) -> Any:
    """The OpenVINO row (its precision read back from OpenVINO), or why it was not built."""
    from tdmi import runtime
    from tdmi.benchmarks.latency import Runner

    method = opts.calib_method if opts.calib_method in ("auto", "max", "percentile") else "auto"
    path = _variant_path(
        spec, opts, cache, calibration, method, opts.int8_op_types if spec.precision == "int8" else None
    )
    if isinstance(path, str):
        return path
    predictor = runtime.load(
        path, backend="openvino", device="cpu", threads=opts.threads, performance_hint="LATENCY"
    )
    describe = cast(Any, predictor).describe  # the OpenVINO predictor's own report
    return Runner(
        spec.name,
        spec.backend,
        predictor.precision,  # read back from OpenVINO: bf16 only where the CPU runs it
        spec.device,
        predictor,
        label=label,
        notes=[f"OpenVINO inference precision {describe()['inference_precision']}"],
    )


def _open_predictor(
    spec: VariantSpec, opts: BenchOptions, cache: ArtifactCache, calibration: Callable[[], Any]
) -> Any:
    """The PyTorch or ONNX Runtime predictor of a row, or why its precision variant was not built."""
    from tdmi import runtime

    ort_options = _ort_options(opts.threads)
    if spec.backend == "torch":
        return runtime.load(cache.weights(), backend="torch", device=spec.device)
    if spec.artifact == "fp32":
        return runtime.load(cache.fp32_onnx(), backend="onnxruntime", device="cpu", **ort_options)
    # FP16 variants ignore the INT8 op types
    path = _variant_path(spec, opts, cache, calibration, opts.calib_method, opts.int8_op_types)
    if isinstance(path, str):
        return path
    return runtime.load(path, backend="onnxruntime", device="cpu", **ort_options)


def _open_variant(
    spec: VariantSpec, opts: BenchOptions, cache: ArtifactCache, calibration: Callable[[], Any], is_ref: bool
) -> Any:
    """A ``Runner`` for one variant, or its skipped row saying why it cannot run here.

    The reference is never skipped: without it no row can be compared, so its absence is an error.
    """
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
    try:
        if spec.backend == "openvino":
            opened = _open_openvino(spec, opts, cache, calibration, label)
        else:
            opened = _open_predictor(spec, opts, cache, calibration)
            if not isinstance(opened, str):
                opened = Runner(
                    spec.name,
                    spec.backend,
                    spec.precision,
                    spec.device,
                    opened,
                    label=label,
                    check_only=spec.check_only,
                )
    except BackendUnavailableError as e:
        if is_ref:
            raise
        return skipped(str(e))
    return skipped(opened) if isinstance(opened, str) else opened


def _load_engines(opts: BenchOptions, cfg: TDMIConfig, cache: ArtifactCache, setup: _Setup) -> None:
    """TensorRT rows: engines given with ``--engine`` (bad ones are errors) and any in the cache folder."""
    from tdmi.benchmarks.report import skipped_row

    explicit = [Path(e).resolve() for e in opts.engines]
    found = [e.resolve() for e in cache.engines() if e.resolve() not in explicit]
    reason = backend_unavailable_reason(VARIANTS["trt"])
    if not explicit and not found:
        why = reason or "no engine given (--engine) or cached; build one with tdmi-build-engine"
        setup.skipped.append(skipped_row("trt", "tensorrt", "—", "cuda", why))
        return
    ours: dict[str, str] = {}
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
        _open_engine(path, name, sidecar, path in explicit, opts, cache, ours, setup)


def _open_engine(
    path: Path,
    name: str,
    sidecar: Any,
    explicit: bool,
    opts: BenchOptions,
    cache: ArtifactCache,
    ours: dict[str, str],
    setup: _Setup,
) -> None:
    """One engine's row; ``ours`` (the cache's ONNX hashes, filled once) tells whether it is ours."""
    from tdmi import runtime
    from tdmi.benchmarks.latency import Runner
    from tdmi.benchmarks.report import skipped_row
    from tdmi.errors import BackendUnavailableError

    try:
        predictor = runtime.load(path, backend="tensorrt", device="cuda", cuda_graph=opts.cuda_graph)
    except (BackendUnavailableError, EngineError) as e:
        if explicit and isinstance(e, EngineError):
            raise
        setup.skipped.append(skipped_row(name, "tensorrt", sidecar.precision, "cuda", str(e)))
        return
    notes = [f"engine {path.name}", *getattr(predictor, "warnings", [])]
    if not ours:
        ours.update({sha256_file(p): p.name for p in cache.folder.glob("*.onnx")})
    if sidecar.source_onnx_sha256 not in ours:
        notes.append("built from an ONNX file other than this cache's exports: its weights may differ")
    setup.runners.append(Runner(name, "tensorrt", sidecar.precision, "cuda", predictor, notes=notes))
