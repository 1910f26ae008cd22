"""What ``tdmi-bench`` can be asked: :class:`BenchOptions`, its fixed choices, and its checks.

Cheap to import (the CLI declares its option types from here): no numpy, torch or onnx.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from tdmi.benchmarks.variants import parse_batches
from tdmi.errors import ConfigError, ExportError, UsageError
from tdmi.spec.choices import MISSING_FRAMES
from tdmi.spec.config import TDMIConfig

# INT8 ranges: auto (each target's measured default), max, percentile (ONNX Runtime only), entropy
BenchCalibMethod = Literal["auto", "max", "percentile", "entropy"]
BENCH_CALIB_METHODS: tuple[str, ...] = get_args(BenchCalibMethod)
# Task accuracy against ground truth: synthetic, none, or auto (synthetic with a checkpoint)
Accuracy = Literal["auto", "synthetic", "none"]
ACCURACY_CHOICES: tuple[str, ...] = get_args(Accuracy)


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


def bench_options(
    *, batch: str, engine: list[Path] | None, int8_op_types: str | None, no_progress: bool, **fields: Any
) -> BenchOptions:
    """The job ``tdmi-bench``'s options describe: the comma lists parsed, the engines listed.

    ``fields`` are the :class:`BenchOptions` fields the options give as they are.
    """
    from tdmi.export.int8_recipes import parse_op_types

    return BenchOptions(
        batches=parse_batches(batch),
        engines=list(engine or []),
        int8_op_types=parse_op_types(int8_op_types),
        progress=not no_progress,
        **fields,
    )


def check_options(opts: BenchOptions) -> None:
    """Every option value makes sense, before minutes of exporting (a UsageError naming the option)."""
    if opts.missing_frames not in MISSING_FRAMES:
        raise UsageError(f"--missing-frames must be 'error' or 'nearest', got {opts.missing_frames!r}")
    if opts.iters < 1 or opts.warmup < 0:
        raise UsageError(f"--iters must be >= 1 and --warmup >= 0, got {opts.iters} and {opts.warmup}")
    if opts.calib_method not in BENCH_CALIB_METHODS:
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
    if opts.accuracy not in ACCURACY_CHOICES:
        raise UsageError(f"--accuracy must be one of {', '.join(ACCURACY_CHOICES)}, got {opts.accuracy!r}")
    if opts.accuracy_clips < 1:
        raise UsageError(f"--accuracy-clips must be positive, got {opts.accuracy_clips}")


def resolve_bench_config(config: str | None, checkpoint: Path | None) -> TDMIConfig:
    """The model config to benchmark: ``--config``, else the checkpoint's own, else the default preset."""
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
