"""Peak memory of a benchmark run, its child processes included, and the child runner that bounds it.

Exporting and quantising W48 holds a PyTorch model, an ONNX graph and a calibration probe that
exposes every activation; none of it is needed once the artifact is on disk, yet a Python process
rarely hands such memory back to the OS (allocator arenas, ORT's arena). Each artifact is therefore
built in a fresh child process (``spawn``): when it exits, all of it is gone.

Peak RSS is read from ``VmHWM`` (``/proc/self/status``). ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is
not used for children: Linux carries the parent's peak over ``fork``/``exec`` into it, so it would
report the parent's figure. Each child reads its own ``VmHWM`` at exit instead, and the job's peak
is the larger of the parent's own peak and, for every child, the child's peak plus the parent's
private (anonymous) RSS while it ran: the parent only waits meanwhile, and the library pages both
map are one copy in memory.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

MIB = 1024 * 1024


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB)."""
    kib = _status_kib("VmHWM:")
    if kib is not None:
        return kib / 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / MIB if sys.platform == "darwin" else rss / 1024


def current_rss_mib() -> float:
    """This process's resident memory now (MiB); its peak where the OS does not say."""
    kib = _status_kib("VmRSS:")
    return kib / 1024 if kib is not None else peak_rss_mib()


def private_rss_mib() -> float:
    """This process's resident memory that no child shares (anonymous + shmem), in MiB.

    A child imports the same libraries (torch alone maps ~0.45 GB of file pages), whose pages are
    one physical copy for both; counting them twice would overstate what the job holds.
    """
    anon, shmem = _status_kib("RssAnon:"), _status_kib("RssShmem:")
    if anon is None:
        return current_rss_mib()
    return (anon + (shmem or 0)) / 1024


@dataclass
class ChildPeak:
    """One child process: what it did, its own peak, and the parent's private RSS while it ran."""

    what: str
    peak_rss_mib: float
    parent_rss_mib: float


@dataclass
class MemoryLedger:
    """The memory figures of one run: the parent's own peak and every child's."""

    children: list[ChildPeak] = field(default_factory=list)

    def job_peak_mib(self, self_peak: float | None = None) -> float:
        """Bound on the peak of parent + children together (they never run side by side)."""
        own = peak_rss_mib() if self_peak is None else self_peak
        return max([own, *(c.parent_rss_mib + c.peak_rss_mib for c in self.children)])

    def to_dict(self) -> dict[str, Any]:
        own = peak_rss_mib()
        return {
            "peak_rss_mib": round(self.job_peak_mib(own), 1),
            "self_peak_rss_mib": round(own, 1),
            "children": [
                {k: round(v, 1) if isinstance(v, float) else v for k, v in asdict(c).items()}
                for c in self.children
            ],
            "method": "VmHWM of this process and of each child (read by the child at exit); job peak = "
            "max(own peak, each child's peak + this process's private RSS while it ran)",
        }


def _child_main(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, float]:
    result = fn(*args, **kwargs)
    return result, peak_rss_mib()


def run_in_child(
    what: str, ledger: MemoryLedger | None, fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """``fn(*args, **kwargs)`` in a fresh ``spawn`` process; its result or its exception, re-raised here.

    ``fn`` and its arguments must be picklable (a module-level function). The child's peak RSS goes
    into ``ledger``.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    parent = private_rss_mib()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        result, peak = pool.submit(_child_main, fn, args, kwargs).result()
    if ledger is not None:
        ledger.children.append(ChildPeak(what, peak, parent))
    return result
