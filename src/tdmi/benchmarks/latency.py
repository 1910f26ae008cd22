"""Latency of several backends measured side by side, and how far their heatmaps are from the reference.

Speed-ups are made to survive a busy machine: every round runs each backend once, back to back, in a
shuffled order; a row's speed-up is the median of its per-round ratios to the reference (a round
slowed by another process slows both sides of its ratio), with the inter-quartile range as its spread.
A row is flagged noisy when that spread is wide or other processes kept the CPUs busy during the
timing (``LoadProbe``). Tests check the logic here with hand-made numbers, never timings.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tdmi.errors import DataError

# A speed-up is flagged noisy when its per-round ratios spread (IQR) over more than this fraction of
# their median, or when other processes used more than this fraction of the CPUs while timing.
NOISY_SPREAD = 0.25
NOISY_LOAD = 0.25


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
    """One runner at one batch size: its timed calls (by round) and its first output."""

    runner: Runner
    batch: int
    times_s: list[float] = field(default_factory=list)
    output: np.ndarray | None = None
    error: str | None = None
    round_times: dict[int, float] = field(default_factory=dict)

    @property
    def stats(self) -> LatencyStats | None:
        return latency_stats(self.times_s, self.batch) if self.times_s and self.error is None else None


Advance = Callable[[str], None]


@dataclass(frozen=True)
class RatioStats:
    """A speed-up as the median of per-round paired ratios, with its inter-quartile range."""

    median: float
    p25: float
    p75: float
    rounds: int

    @property
    def spread(self) -> float:
        """IQR width relative to the median (0 = every round agreed)."""
        return (self.p75 - self.p25) / self.median if self.median > 0 else float("inf")

    @property
    def noisy(self) -> bool:
        return self.rounds < 3 or self.spread > NOISY_SPREAD


def paired_ratio(reference: Measurement, other: Measurement) -> RatioStats | None:
    """Median and IQR of ``reference time / other time`` over the rounds both were timed in."""
    rounds = sorted(set(reference.round_times) & set(other.round_times))
    ratios = [reference.round_times[r] / other.round_times[r] for r in rounds if other.round_times[r] > 0]
    if not ratios:
        return None
    return RatioStats(percentile(ratios, 50), percentile(ratios, 25), percentile(ratios, 75), len(ratios))


def _cpu_busy_s() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat (Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / hz, total / hz


class LoadProbe:
    """How busy *other* processes kept the CPUs while this one was timing.

    Machine-wide busy CPU time minus this process's own, over wall time x cores: 0 on a quiet
    machine, 1 when other processes kept every core busy. ``None`` where /proc/stat is absent.
    """

    def __init__(self) -> None:
        self._start: tuple[tuple[float, float] | None, float, float] | None = None
        self.others: float | None = None
        self.loadavg: float | None = None

    def __enter__(self) -> LoadProbe:
        self._start = (_cpu_busy_s(), time.process_time(), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._start is not None
        (cpu0, proc0, wall0), cpu1 = self._start, _cpu_busy_s()
        proc, wall = time.process_time() - proc0, time.perf_counter() - wall0
        if cpu0 is not None and cpu1 is not None and wall > 0:
            # /proc/stat's first line sums every core of the machine.
            others = (cpu1[0] - cpu0[0]) - proc
            self.others = min(1.0, max(0.0, others / (wall * (os.cpu_count() or 1))))
        if hasattr(os, "getloadavg"):
            self.loadavg = os.getloadavg()[0]


def _call(m: Measurement, clips: np.ndarray, timed: bool, round_index: int = -1) -> None:
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
        m.round_times[round_index] = dt


def measure(
    runners: Sequence[Runner],
    inputs: dict[int, np.ndarray],
    iters: int,
    warmup: int,
    time_checks: bool = False,
    advance: Advance | None = None,
    seed: int = 0,
) -> list[Measurement]:
    """Warm up, then ``iters`` rounds per batch, each running every runner once in a shuffled order.

    ``inputs`` maps batch size -> clips [B, T, 3, H, W]. Check-only runners are called once per
    batch (their output is compared, their time is not) unless ``time_checks``.
    ``advance(name)`` is called after every call, for a progress bar.
    """
    rng = random.Random(seed)
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
            order = list(timed)
            rng.shuffle(order)  # no backend always runs right after another (caches, ORT threads)
            for m in order:
                _call(m, clips, timed=True, round_index=i)
                step(m.runner.name)
        results.extend(ms)
    return results


def calls_per_batch(runners: Sequence[Runner], iters: int, warmup: int, time_checks: bool) -> int:
    """How many ``advance`` steps :func:`measure` makes per batch size (for the progress total)."""
    timed = sum(1 for r in runners if time_checks or not r.check_only)
    return (len(runners) - timed) + timed * (iters + warmup)
