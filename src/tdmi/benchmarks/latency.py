"""Latency of several backends measured side by side, and how far their heatmaps are from the reference.

Backends are timed interleaved (round-robin per iteration, starting point rotated) so that a noisy
machine slows all of them alike and the speed-up ratios stay meaningful even when absolute times
drift. Tests check the logic here with hand-made numbers, never timings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tdmi.errors import DataError


class PredictorLike(Protocol):
    """The part of ``tdmi.runtime.Predictor`` the benchmark uses."""

    def predict(self, clips: Any) -> Any: ...


@dataclass(eq=False)
class Runner:
    """One benchmark row kind: a predictor plus what to call it in the table."""

    name: str
    backend: str
    precision: str
    device: str
    predictor: PredictorLike
    label: str = ""  # e.g. "accuracy check (TensorRT-targeted graph)"
    check_only: bool = False  # not timed unless asked: run once per batch for its accuracy
    notes: list[str] = field(default_factory=list)

    def run(self, clips: np.ndarray) -> np.ndarray:
        out = to_numpy(self.predictor.predict(clips))
        self.synchronize()
        return out

    def synchronize(self) -> None:
        """Wait for the device: a GPU call returns before its work ends, timing it would lie."""
        sync = getattr(self.predictor, "synchronize", None)
        if callable(sync):
            sync()
        elif self.device.startswith("cuda") and self.backend == "torch":
            import torch

            torch.cuda.synchronize()

    def close(self) -> None:
        close = getattr(self.predictor, "close", None)
        if callable(close):
            close()


def to_numpy(out: Any) -> np.ndarray:
    """Heatmaps as float32 numpy, whatever the backend returned (numpy, torch on any device)."""
    if hasattr(out, "detach"):
        out = out.detach().float().cpu().numpy()
    arr = np.asarray(out)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return arr


# ------------------------------------------------------------------------------------------- numbers


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics.

    Same definition as ``numpy.percentile``'s default; written out so the report's numbers have
    one documented meaning: rank ``(n - 1) * q / 100`` in the sorted values.
    """
    if not 0.0 <= q <= 100.0:
        raise DataError(f"percentile q must be within 0..100, got {q}")
    xs = sorted(float(v) for v in values)
    if not xs:
        raise DataError("percentile of no values")
    rank = (len(xs) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds and the throughput it implies."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # clips per second = batch / mean latency
    iters: int


def latency_stats(times_s: Sequence[float], batch: int) -> LatencyStats:
    if not times_s:
        raise DataError("no timed runs")
    if batch < 1:
        raise DataError(f"batch must be positive, got {batch}")
    ms = [t * 1000.0 for t in times_s]
    mean = sum(ms) / len(ms)
    return LatencyStats(
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        mean_ms=mean,
        throughput=batch / (mean / 1000.0) if mean > 0 else float("inf"),
        iters=len(ms),
    )


# ------------------------------------------------------------------------------------------ timing


@dataclass(eq=False)
class Measurement:
    """One runner at one batch size: its timed calls and its first output."""

    runner: Runner
    batch: int
    times_s: list[float] = field(default_factory=list)
    output: np.ndarray | None = None
    error: str | None = None

    @property
    def stats(self) -> LatencyStats | None:
        return latency_stats(self.times_s, self.batch) if self.times_s and self.error is None else None


Advance = Callable[[str], None]


def _call(m: Measurement, clips: np.ndarray, timed: bool) -> None:
    if m.error is not None:
        return
    try:
        t0 = time.perf_counter()
        out = m.runner.run(clips)
        dt = time.perf_counter() - t0
    except Exception as e:  # one broken backend must not stop the others; its row says why
        first = (str(e).splitlines() or [""])[0][:200]
        m.error = f"{type(e).__name__}: {first}" if not isinstance(e, DataError) else first
        return
    if m.output is None:
        expected = (clips.shape[0],)
        if out.ndim != 4 or out.shape[:1] != expected:
            m.error = f"output shape {tuple(out.shape)} is not [{clips.shape[0]}, J, h, w]"
            return
        m.output = out
    if timed:
        m.times_s.append(dt)


def measure(
    runners: Sequence[Runner],
    inputs: dict[int, np.ndarray],
    iters: int,
    warmup: int,
    time_checks: bool = False,
    advance: Advance | None = None,
) -> list[Measurement]:
    """Warm up, then time every runner ``iters`` times per batch, interleaved round-robin.

    ``inputs`` maps batch size -> clips [B, T, 3, H, W]. Check-only runners are called once per
    batch (their output is compared, their time is not) unless ``time_checks``.
    ``advance(name)`` is called after every call, for a progress bar.
    """
    if iters < 1:
        raise DataError(f"--iters must be at least 1, got {iters}")
    if warmup < 0:
        raise DataError(f"--warmup must be 0 or more, got {warmup}")
    step = advance or (lambda _name: None)
    results: list[Measurement] = []
    for batch, clips in inputs.items():
        ms = [Measurement(r, batch) for r in runners]
        timed = [m for m in ms if time_checks or not m.runner.check_only]
        for m in ms:
            if m.runner.check_only and not time_checks:
                _call(m, clips, timed=False)
                step(m.runner.name)
        for _ in range(warmup):
            for m in timed:
                _call(m, clips, timed=False)
                step(m.runner.name)
        for i in range(iters):
            k = i % len(timed) if timed else 0
            for m in timed[k:] + timed[:k]:
                _call(m, clips, timed=True)
                step(m.runner.name)
        results.extend(ms)
    return results


def calls_per_batch(runners: Sequence[Runner], iters: int, warmup: int, time_checks: bool) -> int:
    """How many ``advance`` steps :func:`measure` makes per batch size (for the progress total)."""
    timed = sum(1 for r in runners if time_checks or not r.check_only)
    return (len(runners) - timed) + timed * (iters + warmup)
