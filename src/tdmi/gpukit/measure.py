"""Timing and device helpers the sections share: synchronised per-call latency, strict FP32, skips."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from tdmi.gpukit.options import Options, SectionSkipped
from tdmi.stats import percentiles


def sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def latency_summary(times_s: list[float]) -> dict[str, float]:
    """p50 / p90 / mean in milliseconds (the package's one percentile, :mod:`tdmi.stats`)."""
    ms = [t * 1e3 for t in times_s]
    p50, p90 = percentiles(ms, (50, 90))
    return {"p50_ms": p50, "p90_ms": p90, "mean_ms": sum(ms) / len(ms), "iters": len(times_s)}


def time_calls(fn: Callable[[], Any], cuda: bool, warmup: int, iters: int, max_s: float) -> dict[str, float]:
    """Per-call latency as a caller sees it (synchronised), at most ``max_s`` of timed calls."""
    for _ in range(warmup):
        fn()
    sync(cuda)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < iters and (len(times) < 3 or time.perf_counter() - started < max_s):
        t0 = time.perf_counter()
        fn()
        sync(cuda)
        times.append(time.perf_counter() - t0)
    return latency_summary(times)


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off, as the project's PyTorch reference: FP32 figures are FP32."""
    import torch

    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def require_torch_cuda() -> None:
    from tdmi.plugins.availability import torch_cuda_available

    avail = torch_cuda_available()
    if not avail:
        raise SectionSkipped(avail.reason)


def device_reason(opts: Options) -> str:
    """Why a GPU-only part does not run here."""
    if not opts.cuda:
        return "needs a CUDA GPU (--device cpu)"
    from tdmi.plugins.availability import torch_cuda_available

    return torch_cuda_available().reason


def skip(reason: str) -> Callable[[], dict[str, Any]]:
    """A row function that records ``reason`` as the row's skip."""

    def fn() -> dict[str, Any]:
        raise SectionSkipped(reason)

    return fn


def raising(exc: Exception) -> Callable[[], dict[str, Any]]:
    """A row function that records ``exc`` as the row's failure."""

    def fn() -> dict[str, Any]:
        raise exc

    return fn
