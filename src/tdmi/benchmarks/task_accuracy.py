"""Task accuracy of every backend against ground truth on held-out synthetic clips (``--accuracy synthetic``).

"Within 0.1 px of FP32" says whether two backends compute the same thing; users choosing INT8 need
what it costs in the metric they care about. The built-in moving-figure clips have exactly known
joints, so every backend is scored against the truth (PCK@0.05 of the box's longer side, OKS AP)
on the same seeded clips, and the drop against the FP32 reference gets a paired bootstrap interval.

The clips come from a seed different from training's (``HELDOUT_SEED``), so synthetic-trained
weights (``python -m tdmi.train.synthetic``) are not scored on what they saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tdmi.benchmarks.latency import Measurement, RatioStats, Runner, paired_ratio
from tdmi.errors import DataError
from tdmi.eval.metrics import TaskScore, task_scores
from tdmi.eval.synthetic import SyntheticSet, predict_keypoints, synthetic_set

__all__ = ["SyntheticSet", "TaskAccuracyRow", "run_synthetic_accuracy", "synthetic_set"]


@dataclass
class TaskAccuracyRow:
    """One backend's task accuracy, its drop against the reference and its speed-up (batch 1 p50)."""

    name: str
    precision: str
    status: str  # "ok" | "reference" | "failed"
    label: str = ""
    note: str = ""
    pck: float | None = None  # percent
    pck_ci: tuple[float, float] | None = None  # percent
    drop_pck: float | None = None  # points: reference minus this
    drop_pck_ci: tuple[float, float] | None = None
    oks_ap: float | None = None  # percent
    drop_oks_ap: float | None = None
    failed_clips: int | None = None
    speedup: float | None = None  # median of per-round paired ratios to the speed-up baseline
    speedup_p25: float | None = None
    speedup_p75: float | None = None
    nonfinite: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TaskAccuracyResult:
    dataset: dict[str, Any]
    rows: list[TaskAccuracyRow] = field(default_factory=list)
    scores: dict[str, TaskScore] = field(default_factory=dict)


Advance = Callable[[str, int], None]


def run_synthetic_accuracy(
    runners: Sequence[Runner],
    data: SyntheticSet,
    reference: str,
    batch: int = 1,
    speedups: dict[str, RatioStats] | None = None,
    advance: Advance | None = None,
) -> TaskAccuracyResult:
    """Score every runner on ``data`` against the truth; a broken backend gets a failed row, not a crash."""
    names = [r.name for r in runners]
    if reference not in names:
        raise DataError(f"the reference backend {reference!r} is not among the runners ({', '.join(names)})")
    step = advance or (lambda _name, _n: None)
    preds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows: dict[str, TaskAccuracyRow] = {}
    for r in runners:
        row = TaskAccuracyRow(
            r.name, r.precision, "reference" if r.name == reference else "ok", label=r.label
        )
        rows[r.name] = row
        try:
            kp, sc, bad = predict_keypoints(r.run, data, batch)
        except Exception as e:  # one broken backend must not stop the others; its row says why
            row.status = "failed"
            row.note = (str(e).splitlines() or [type(e).__name__])[0][:200]
            if r.name == reference:
                raise DataError(f"the reference {reference} failed on the synthetic clips: {row.note}") from e
            continue
        finally:
            step(r.name, data.size)
        row.nonfinite = bad
        if bad:
            row.note = f"{bad} non-finite heatmap values (those joints count as misses)"
        preds[r.name] = (kp, sc)
    scores = task_scores(preds, data.keypoints, data.visible, data.boxes, reference=reference)
    for name, s in scores.items():
        row = rows[name]
        row.pck, row.oks_ap, row.failed_clips = 100 * s.pck, 100 * s.oks_ap, s.failed_clips
        row.pck_ci = (100 * s.pck_ci[0], 100 * s.pck_ci[1])
        if name != reference:
            row.drop_pck, row.drop_pck_ci, row.drop_oks_ap = s.drop_pck, s.drop_pck_ci, s.drop_oks_ap
        ratio = (speedups or {}).get(name)
        if ratio is not None:
            row.speedup, row.speedup_p25, row.speedup_p75 = ratio.median, ratio.p25, ratio.p75
    return TaskAccuracyResult(dataset=data.describe(), rows=[rows[n] for n in names], scores=scores)


# ------------------------------------------------------------------------------------------ rendering

TASK_HEADERS = ("backend", "precision", "PCK@0.05 %", "95% CI", "PCK drop", "drop 95% CI", "OKS AP %",
                "AP drop", "clips < 0.5", "speed-up", "notes")  # fmt: skip


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "—" if v is None else format(v, fmt)


def task_cells(row: TaskAccuracyRow) -> list[str]:
    name = f"{row.name} (ref)" if row.status == "reference" else row.name
    ci = "—" if row.pck_ci is None else f"{row.pck_ci[0]:.1f}–{row.pck_ci[1]:.1f}"
    dci = "—" if row.drop_pck_ci is None else f"{row.drop_pck_ci[0]:+.2f} to {row.drop_pck_ci[1]:+.2f}"
    drop = "—" if row.drop_pck is None else f"{row.drop_pck:+.2f}"
    ap_drop = "—" if row.drop_oks_ap is None else f"{row.drop_oks_ap:+.2f}"
    notes = "; ".join(p for p in (row.status if row.status == "failed" else "", row.label, row.note) if p)
    speed = "—" if row.speedup is None else f"{row.speedup:.2f}x"
    if row.speedup is not None and row.speedup_p25 is not None and row.speedup_p75 is not None:
        speed += f" ({row.speedup_p25:.2f}-{row.speedup_p75:.2f})"
    return [name, row.precision, _f(row.pck), ci, drop, dci, _f(row.oks_ap), ap_drop,
            "—" if row.failed_clips is None else str(row.failed_clips), speed, notes]  # fmt: skip


def task_title(dataset: dict[str, Any]) -> str:
    return (
        f"task accuracy vs ground truth ({dataset.get('clips')} held-out synthetic clips, seed "
        f"{dataset.get('seed')}); drop = reference minus backend, in points; speed-up over "
        f"{dataset.get('speedup_baseline', '—')} at batch {dataset.get('speedup_batch', '—')}"
    )


def speedups_at_batch1(
    measurements: Sequence[Measurement], baseline: str = "ort-fp32", reference: str | None = None
) -> tuple[dict[str, RatioStats], str]:
    """Speed-up of every timed runner over ``baseline`` (else ``reference``) at the smallest batch size.

    ONNX Runtime FP32 is the baseline users deploying on a CPU compare INT8 with. Each ratio is the
    median of per-round paired ratios (both timed in the same shuffled round) with its IQR, so it
    survives a noisy machine the way the latency table's speed-ups do.
    """
    timed = [m for m in measurements if m.error is None and m.round_times]
    if not timed:
        return {}, baseline
    smallest = min(m.batch for m in timed)
    by_name = {m.runner.name: m for m in timed if m.batch == smallest}
    base = by_name.get(baseline) or (by_name.get(reference) if reference is not None else None)
    if base is None:
        return {}, baseline
    out = {name: r for name, m in by_name.items() if (r := paired_ratio(base, m)) is not None}
    return out, base.runner.name
