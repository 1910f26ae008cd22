"""Benchmark results as one data structure (JSON through ``to_dict``), built from the measurements.

Its renderings: :mod:`.report_console` (the console tables) and :mod:`.report_markdown` (Markdown,
PNG plot, and the files beside ``--json``). Every rendering carries the machine, the weights
(random weights are said loudly) and the settings, because a latency or accuracy number without
them cannot be compared with anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tdmi.benchmarks.accuracy import BackendAccuracy
from tdmi.benchmarks.latency import NOISY_LOAD, NOISY_SPREAD, Measurement, paired_ratio
from tdmi.benchmarks.task_accuracy import TaskAccuracyRow
from tdmi.eval.metrics import heatmap_error, keypoint_agreement, nonfinite_count

GROUP_NAMES = ("Head", "Shou", "Elb", "Wri", "Hip", "Knee", "Ankl", "Total")
NONFINITE_FLAG = "NaN/Inf in output"


@dataclass
class LatencyRow:
    """One backend at one batch size on the sample clip."""

    name: str
    backend: str
    precision: str
    device: str
    batch: int | None
    status: str  # "ok" | "reference" | "skipped" | "failed"
    label: str = ""
    note: str = ""
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    throughput: float | None = None
    iters: int = 0
    speedup: float | None = None  # median of per-round paired ratios to the reference
    speedup_p25: float | None = None
    speedup_p75: float | None = None
    speedup_rounds: int = 0
    noisy: str = ""  # why the speed-up is not to be trusted ("" = it is)
    hm_max_abs: float | None = None
    hm_max_rel: float | None = None
    kp_agreement: float | None = None
    kp_max_dev: float | None = None
    nonfinite: int = 0

    @property
    def flags(self) -> str:
        flags = [NONFINITE_FLAG if self.nonfinite else "", f"noisy: {self.noisy}" if self.noisy else ""]
        return "; ".join(f for f in flags if f)


@dataclass
class AccuracyRow:
    """One backend on the PoseTrack split."""

    name: str
    backend: str
    precision: str
    status: str  # "ok" | "reference" | "skipped" | "failed" | "flagged"
    label: str = ""
    note: str = ""
    groups: dict[str, float] | None = None
    ap: dict[str, float] | None = None
    delta_total: float | None = None
    kp_agreement: float | None = None
    kp_max_dev: float | None = None
    nonfinite: int = 0
    predictions: str | None = None
    counts: dict[str, Any] | None = None

    @property
    def flags(self) -> str:
        return NONFINITE_FLAG if self.nonfinite else ""


@dataclass
class BenchReport:
    machine: dict[str, Any]
    config: dict[str, Any]
    weights: str
    random_weights: bool
    reference: str
    settings: dict[str, Any]
    latency: list[LatencyRow] = field(default_factory=list)
    accuracy: list[AccuracyRow] | None = None
    dataset: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    task_accuracy: list[TaskAccuracyRow] | None = None  # --accuracy synthetic
    task_dataset: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None  # peak RSS of the run, children included (benchmarks.memory)
    best_cpu: dict[str, Any] | None = None  # the fastest CPU row (within the PCK budget when measured)

    def to_dict(self) -> dict[str, Any]:
        def clean(obj: Any) -> Any:
            if isinstance(obj, float):
                return None if math.isnan(obj) else (str(obj) if math.isinf(obj) else obj)
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [clean(v) for v in obj]
            return obj

        data = asdict(self)
        for row, src in zip(data["latency"], self.latency, strict=True):
            row["flags"] = src.flags
        for arow, asrc in zip(data["accuracy"] or [], self.accuracy or [], strict=True):
            arow["flags"] = asrc.flags
        data["schema"] = "tdmi-bench"
        data["schema_version"] = 1
        return clean(data)


# ------------------------------------------------------------------------------------------ building


def skipped_accuracy_row(row: LatencyRow) -> AccuracyRow:
    """A backend that could not run here, as its line in the PoseTrack table."""
    return AccuracyRow(row.name, row.backend, row.precision, "skipped", label=row.label, note=row.note)


def skipped_row(
    name: str, backend: str, precision: str, device: str, note: str, label: str = ""
) -> LatencyRow:
    return LatencyRow(name, backend, precision, device, None, "skipped", label=label, note=note)


def _noise(spread: float | None, rounds: int, load: float | None) -> str:
    why = []
    if rounds and rounds < 3:
        why.append(f"only {rounds} paired rounds")
    elif spread is not None and spread > NOISY_SPREAD:
        why.append(f"ratio IQR {100 * spread:.0f}% of the median")
    if load is not None and load > NOISY_LOAD:
        why.append(f"other processes used {100 * load:.0f}% of the CPUs")
    return ", ".join(why)


def latency_rows(
    measurements: Sequence[Measurement], reference: str, load: float | None = None
) -> list[LatencyRow]:
    """Rows with speed-up and heatmap/keypoint agreement against ``reference`` at the same batch.

    ``load``: the share of the CPUs other processes used while timing (``LoadProbe.others``).
    """
    refs = {m.batch: m for m in measurements if m.runner.name == reference}
    rows: list[LatencyRow] = []
    for m in measurements:
        r = m.runner
        is_ref = r.name == reference
        row = LatencyRow(
            r.name,
            r.backend,
            r.precision,
            r.device,
            m.batch,
            "reference" if is_ref else "ok",
            label=r.label,
            note="; ".join(r.notes),
        )
        if m.error is not None:
            row.status = "failed"
            row.note = "; ".join([*r.notes, m.error])
            rows.append(row)
            continue
        stats = m.stats
        if stats is not None:
            row.p50_ms, row.p90_ms, row.p99_ms = stats.p50_ms, stats.p90_ms, stats.p99_ms
            row.mean_ms, row.throughput, row.iters = stats.mean_ms, stats.throughput, stats.iters
        elif r.check_only:
            row.note = "; ".join([*r.notes, "not timed (CPU emulation of a TensorRT graph; --time-checks)"])
        if m.output is not None:
            row.nonfinite = nonfinite_count(m.output)
        ref = refs.get(m.batch)
        if is_ref:
            row.speedup = 1.0 if stats is not None else None
            if stats is not None:
                row.noisy = _noise(None, 0, load)
            rows.append(row)
            continue
        if ref is not None and ref.output is not None and m.output is not None and ref.error is None:
            ratio = paired_ratio(ref, m) if stats is not None else None
            if ratio is not None:
                row.speedup, row.speedup_p25, row.speedup_p75 = ratio.median, ratio.p25, ratio.p75
                row.speedup_rounds = ratio.rounds
                row.noisy = _noise(ratio.spread, ratio.rounds, load)
            if m.output.shape == ref.output.shape:
                row.hm_max_abs, row.hm_max_rel = heatmap_error(ref.output, m.output)
                row.kp_agreement, row.kp_max_dev = keypoint_agreement(ref.output, m.output)
            else:
                row.note = "; ".join(filter(None, [row.note, f"output shape {m.output.shape} != reference"]))
        rows.append(row)
    return rows


def accuracy_rows(results: Sequence[BackendAccuracy], reference: str) -> list[AccuracyRow]:
    ref = next((a for a in results if a.runner.name == reference), None)
    ref_total = ref.result.total if ref is not None and ref.result is not None else None
    rows: list[AccuracyRow] = []
    for a in results:
        r = a.runner
        row = AccuracyRow(
            r.name,
            r.backend,
            r.precision,
            "reference" if r.name == reference else "ok",
            label=r.label,
            note="; ".join(r.notes),
            nonfinite=a.nonfinite,
            kp_agreement=None if r.name == reference else a.agreement,
            kp_max_dev=None if r.name == reference else a.max_dev,
            predictions=str(a.predictions) if a.predictions else None,
        )
        if a.error is not None:
            row.status = "failed"
            row.note = "; ".join(filter(None, [row.note, a.error]))
        elif a.nonfinite:
            row.status = "flagged"
            row.note = "; ".join(
                filter(None, [row.note, f"{a.nonfinite} non-finite heatmap values: not scored"])
            )
        if a.result is not None:
            row.groups = dict(a.result.groups)
            row.ap = dict(a.result.ap)
            row.counts = {
                k: v for k, v in a.result.counts.items() if k in ("frames", "gt_persons", "pred_persons")
            }
            if ref_total is not None and not math.isnan(ref_total) and not math.isnan(a.result.total):
                row.delta_total = a.result.total - ref_total
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ formatting


def best_cpu_variant(
    rows: Sequence[LatencyRow],
    task_rows: Sequence[TaskAccuracyRow] | None,
    max_drop: float = 0.5,
) -> dict[str, Any] | None:
    """The fastest CPU row at the smallest batch; with task accuracy, among those within ``max_drop``.

    Why: a CPU user reads the summary to pick an engine; the fastest graph that loses keypoints is
    not the answer, so when PCK was measured the budget (the INT8 search's default) applies.
    """
    timed = [r for r in rows if r.device == "cpu" and r.status in ("ok", "reference") and r.p50_ms]
    if not timed:
        return None
    smallest = min(r.batch or 1 for r in timed)
    timed = [r for r in timed if (r.batch or 1) == smallest and not r.label]
    drops = {t.name: t.drop_pck for t in task_rows or [] if t.status in ("ok", "reference")}
    pool = timed
    if task_rows:
        pool = [r for r in timed if r.status == "reference" or (drops.get(r.name) or 0.0) <= max_drop]
        pool = [r for r in pool if r.name in drops]
    if not pool:
        return None
    best = min(pool, key=lambda r: r.p50_ms or math.inf)
    text = f"{best.name} ({best.precision}, p50 {best.p50_ms:.1f} ms at batch {smallest}"
    if best.speedup is not None and best.status != "reference":
        text += f", {best.speedup:.2f}x the reference"
    if best.name in drops and drops[best.name] is not None:
        text += f", PCK drop {drops[best.name]:+.2f} points (budget {max_drop})"
    text += ")"
    return {"name": best.name, "precision": best.precision, "p50_ms": best.p50_ms, "text": text}
