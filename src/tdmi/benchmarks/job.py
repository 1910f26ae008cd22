"""``tdmi-bench``'s job: artifacts, predictors, interleaved latency, agreement, optional PoseTrack mAP.

:func:`run_bench` plans the rows (:mod:`.variants`), opens them (:mod:`.runners`, through the
artifact cache of :mod:`.suite`), times them in paired rounds (:mod:`.latency`) and returns the
report (:mod:`.report`) with the machine it ran on (:mod:`tdmi.plugins.machine`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from tdmi.benchmarks.memory import MemoryLedger, run_in_child
from tdmi.benchmarks.options import BenchOptions, check_options, resolve_bench_config
from tdmi.benchmarks.runners import _load_runners, _ort_options, _Setup
from tdmi.benchmarks.variants import VARIANTS, backend_unavailable_reason, variant_set
from tdmi.errors import ConfigError, UsageError
from tdmi.export.pipeline import RANDOM_SEED, ArtifactCache, check_engine, default_cache_dir
from tdmi.plugins.machine import machine_info, usable_cores
from tdmi.spec.config import TDMIConfig
from tdmi.utils import sha256_file

if TYPE_CHECKING:
    from tdmi.benchmarks.report import BenchReport
    from tdmi.spec.choices import MissingFrames


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
class _Plan:
    """What one run does: its config, rows (reference first), PoseTrack data and notes so far."""

    cfg: TDMIConfig
    selected: list[str]
    reference: str
    data: Any
    notes: list[str]


def _plan(opts: BenchOptions) -> _Plan:
    """Check every option and input (before minutes of exporting) and choose the reference."""
    from tdmi.benchmarks.accuracy import load_posetrack

    cfg = resolve_bench_config(opts.config, opts.checkpoint)
    check_options(opts)
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
    return _Plan(cfg, selected, reference, data, notes)


@dataclass
class _Timed:
    """What the timed part of a run measured."""

    rows: list[Any]
    skipped: list[Any]  # the rows that could not run here (also lines of the PoseTrack table)
    results: Any
    task: Any
    load: Any


def _measure(opts: BenchOptions, plan: _Plan, cache: ArtifactCache, setup: _Setup) -> _Timed:
    """Interleaved latency of every runner, then the PoseTrack and synthetic accuracy (if asked)."""
    from tdmi.benchmarks.accuracy import run_posetrack
    from tdmi.benchmarks.latency import LoadProbe, calls_per_batch, measure
    from tdmi.benchmarks.report import latency_rows

    inputs = benchmark_inputs(plan.cfg, opts.batches)
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
        if plan.data is not None:
            assert opts.pred_dir is not None
            clips_task = bar.add_task("PoseTrack clips", total=len(plan.data.samples) * len(setup.runners))
            results = run_posetrack(
                setup.runners,
                plan.data,
                plan.cfg,
                opts.pred_dir,
                plan.reference,
                opts.eval_batch,
                advance=lambda name, n: bar.update(clips_task, advance=n, description=f"PoseTrack {name}"),
            )
    rows = latency_rows(measurements, plan.reference, load.others) + setup.skipped
    scored = _task_accuracy(opts, plan.cfg, cache, setup.runners, plan.reference, measurements)
    return _Timed(rows, setup.skipped, results, scored, load)


def run_bench(opts: BenchOptions, console: Any | None = None) -> BenchReport:
    """The whole job: artifacts, predictors, interleaved latency, agreement, optional PoseTrack mAP."""
    plan = _plan(opts)
    selected, reference = plan.selected, plan.reference
    cache = ArtifactCache.open(opts.cache_dir or default_cache_dir(), plan.cfg, opts.checkpoint)
    cache.progress = opts.progress
    memory = MemoryLedger()  # peak RSS of the build children, reported with the figures
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
    setup = _load_runners(opts, plan.cfg, cache, selected, reference)
    try:
        timed = _measure(opts, plan, cache, setup)
    finally:
        torch.set_num_threads(torch_threads)
        for r in setup.runners:
            r.close()
    plan.notes.extend(_notes(opts, cache, setup, timed.load.others))
    return _report(opts, plan, cache, timed, memory)


def _notes(opts: BenchOptions, cache: ArtifactCache, setup: _Setup, others: float | None) -> list[str]:
    """What a reader of the figures must know: what was built, calibration, load, spinning, NNCF."""
    from tdmi.benchmarks.latency import NOISY_LOAD

    notes: list[str] = []
    threads = opts.threads or 1
    if cache.built:
        notes.append(f"built into the cache this run: {', '.join(cache.built)}")
    notes.extend(setup.notes)
    if others is not None and others > NOISY_LOAD and threads > 1:
        notes.append(
            f"other processes used {100 * others:.0f}% of the CPUs while timing: with {threads} threads "
            "per backend, torch's thread pool stalls under contention (measured in BENCHMARKS.md: speed-ups "
            "of 70-240x instead of ~3.3x); --threads 1 keeps the ratios steady on a busy machine"
        )
    if any(r.backend == "openvino" and r.precision.startswith("int8") for r in setup.runners):
        method = opts.calib_method if opts.calib_method in ("max", "percentile") else "max (NNCF min/max)"
        notes.append(
            f"OpenVINO INT8: NNCF post-training quantization (performance preset) on the same calibration "
            f"clips, ranges by {method}, nothing kept in higher precision (tdmi-export openvino --max-drop "
            "searches a recipe)"
        )
    return notes


def _report(
    opts: BenchOptions, plan: _Plan, cache: ArtifactCache, timed: _Timed, memory: MemoryLedger
) -> BenchReport:
    from tdmi.benchmarks.report import BenchReport, accuracy_rows, best_cpu_variant, skipped_accuracy_row

    if cache.checkpoint is None:
        weights = f"random (seed {RANDOM_SEED}, untrained)"
    else:
        weights = f"{cache.checkpoint} (sha256 {sha256_file(cache.checkpoint)[:12]})"
    task, results, data = timed.task, timed.results, plan.data
    return BenchReport(
        machine=machine_info(),
        config=plan.cfg.to_dict(),
        weights=weights,
        random_weights=cache.random_weights,
        reference=plan.reference,
        settings=_settings(opts, plan.selected, timed.load, cache),
        latency=timed.rows,
        accuracy=(
            accuracy_rows(results, plan.reference) + [skipped_accuracy_row(r) for r in timed.skipped]
            if results is not None
            else None
        ),
        dataset=data.describe() if data is not None else None,
        notes=plan.notes,
        task_accuracy=task.rows if task is not None else None,
        task_dataset=task.dataset if task is not None else None,
        memory=memory.to_dict(),
        best_cpu=best_cpu_variant(timed.rows, task.rows if task is not None else None),
    )


def _settings(opts: BenchOptions, selected: list[str], load: Any, cache: ArtifactCache) -> dict[str, Any]:
    return {
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
        "ort_spinning_off": _ort_options(None)["allow_spinning"] is False,
        "cuda_graph": opts.cuda_graph,
        "cache": str(cache.folder),
    }


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
