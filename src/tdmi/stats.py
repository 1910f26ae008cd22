"""One percentile definition for every latency figure the package prints.

Ground layer (numpy-free, so the GPU kit and the deploy-only install can use it): rank
``(n - 1) * q / 100`` in the sorted values with linear interpolation, numpy.percentile's default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from tdmi.errors import DataError


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``."""
    return percentiles(values, (q,))[0]


def percentiles(values: Iterable[float], qs: Sequence[float]) -> list[float]:
    """Several percentiles of one sample, sorting it once."""
    for q in qs:
        if not 0.0 <= q <= 100.0:
            raise DataError(f"percentile q must be within 0..100, got {q}")
    xs = sorted(float(v) for v in values)
    if not xs:
        raise DataError("percentile of no values")
    out: list[float] = []
    for q in qs:
        rank = (len(xs) - 1) * q / 100.0
        lo = math.floor(rank)
        hi = min(lo + 1, len(xs) - 1)
        out.append(xs[lo] + (xs[hi] - xs[lo]) * (rank - lo))
    return out
