"""Benchmark results as one data structure, and its renderings: console table, JSON, Markdown, PNG plot.

Every rendering carries the machine, the weights (random weights are said loudly) and the settings,
because a latency or accuracy number without them cannot be compared with anything.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tdmi.benchmarks.accuracy import BackendAccuracy
from tdmi.benchmarks.latency import NOISY_LOAD, NOISY_SPREAD, Measurement, paired_ratio
from tdmi.benchmarks.task_accuracy import TASK_HEADERS, TaskAccuracyRow, task_cells, task_title
from tdmi.eval.metrics import heatmap_error, keypoint_agreement, nonfinite_count
from tdmi.utils import check_outputs, write_bytes_atomic, write_text_atomic

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
        for row, src in zip(data["accuracy"] or [], self.accuracy or [], strict=True):
            row["flags"] = src.flags
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


def _num(v: float | None, fmt: str) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, fmt)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100.0 * v:.1f}%"


def _sci(v: float | None) -> str:
    return _num(v, ".2e")


def _what(row: LatencyRow | AccuracyRow) -> str:
    parts = [p for p in (row.label, row.flags, row.note) if p]
    if row.status in ("skipped", "failed"):
        parts.insert(0, row.status)
    return "; ".join(parts)


LATENCY_HEADERS = (
    "backend",
    "precision",
    "batch",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "clips/s",
    "speed-up (IQR)",
    "hm max abs",
    "hm max rel",
    "kp agree",
    "kp max dev",
    "notes",
)


def speedup_cell(row: LatencyRow) -> str:
    if row.speedup is None:
        return "—"
    if row.speedup_p25 is None or row.speedup_p75 is None:
        return f"{row.speedup:.2f}x"
    return f"{row.speedup:.2f}x ({row.speedup_p25:.2f}-{row.speedup_p75:.2f})"


def latency_cells(row: LatencyRow) -> list[str]:
    name = f"{row.name} (ref)" if row.status == "reference" else row.name
    return [
        name,
        row.precision,
        "—" if row.batch is None else str(row.batch),
        _num(row.p50_ms, ".1f"),
        _num(row.p90_ms, ".1f"),
        _num(row.p99_ms, ".1f"),
        _num(row.throughput, ".2f"),
        speedup_cell(row),
        _sci(row.hm_max_abs),
        _sci(row.hm_max_rel),
        _pct(row.kp_agreement),
        _num(row.kp_max_dev, ".3f"),
        _what(row),
    ]


ACCURACY_HEADERS = ("backend", "precision", *GROUP_NAMES, "Δ Total", "kp agree", "notes")


def accuracy_cells(row: AccuracyRow) -> list[str]:
    name = f"{row.name} (ref)" if row.status == "reference" else row.name
    groups = [_num((row.groups or {}).get(g), ".1f") if row.groups else "—" for g in GROUP_NAMES]
    delta = "—" if row.delta_total is None else f"{row.delta_total:+.2f}"
    return [name, row.precision, *groups, delta, _pct(row.kp_agreement), _what(row)]


def header_lines(report: BenchReport) -> list[str]:
    m = report.machine
    v = m.get("versions", {})
    isa = m.get("cpu_int8_isa")
    int8 = "" if isa is None else "; INT8 ISA: " + (", ".join(isa) or "no AVX2")
    if isa is not None and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(isa):
        int8 += " (no VNNI: CPU INT8 speed-ups run well below those of VNNI CPUs)"
    bf16_isa = m.get("cpu_bf16_isa")
    if bf16_isa is not None:
        int8 += "; BF16 ISA: " + (", ".join(bf16_isa) or "none (OpenVINO BF16 runs as FP32 here)")
        if bf16_isa and not {"amx_bf16", "amx_tile"} & set(bf16_isa):
            int8 += " (no AMX)"
    lines = [
        f"model: {report.config.get('name')} (input {report.config.get('input_size')}, "
        f"T={report.config.get('num_frames')}); weights: {report.weights}",
        f"machine: {m.get('cpu')} ({m.get('cpu_cores')} cores, {m.get('cpu_cores_usable')} usable{int8}); "
        f"GPU: {m.get('gpu') or 'none'}",
        "versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"date: {m.get('date')}; git commit: {m.get('git_commit') or 'unknown'}; "
        f"artifacts: {report.settings.get('cache', '—')}",
        f"reference: {report.reference}; input: {report.settings.get('input')}; "
        f"warm-up {report.settings.get('warmup')}, {report.settings.get('iters')} timed rounds per batch, "
        "each running every backend once in shuffled order; speed-up = median of per-round ratios (IQR)",
    ]
    threads = report.settings.get("threads")
    if threads:
        lines.append(
            f"threads: {threads} intra-op for every CPU backend (torch, onnxruntime, openvino), --threads"
        )
    load = report.settings.get("load")
    if load:
        others = load.get("others")
        lines.append(
            "machine load while timing: other processes "
            + ("unknown" if others is None else f"{100 * others:.0f}% of the CPUs")
            + (f", 1-min load average {load['loadavg']:.2f}" if load.get("loadavg") is not None else "")
            + (" (NOISY)" if others is not None and others > NOISY_LOAD else "")
        )
    mem = report.memory
    if mem and mem.get("peak_rss_mib") is not None:
        children = mem.get("children") or []
        line = f"peak memory: {mem['peak_rss_mib'] / 1024:.2f} GiB RSS"
        if children:
            top = max(children, key=lambda c: c["parent_rss_mib"] + c["peak_rss_mib"])
            line += (
                f" (this process {mem['self_peak_rss_mib'] / 1024:.2f} GiB; {len(children)} build "
                f"process(es), the largest {top['peak_rss_mib'] / 1024:.2f} GiB: {top['what']})"
            )
        lines.append(line)
    best = report.best_cpu
    if best:
        lines.append("best CPU variant: " + best["text"])
    if report.random_weights:
        lines.insert(0, "RANDOM WEIGHTS: no --checkpoint given; accuracy columns compare backends, not poses")
    return lines


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out.extend("| " + " | ".join(esc(c) for c in r) + " |" for r in rows)
    return "\n".join(out)


def to_markdown(report: BenchReport) -> str:
    lines = ["# tdmi-bench", ""]
    lines.extend(f"- {line}" for line in header_lines(report))
    lines += [
        "",
        "## Latency and agreement with the reference (built-in sample clip)",
        "",
        "hm max rel is relative to the reference's peak heatmap value; kp agree is the fraction of joints "
        "(argmax + quarter-pixel refinement) within 0.1 heatmap pixel of the reference's.",
        "",
        _md_table(LATENCY_HEADERS, [latency_cells(r) for r in report.latency]),
    ]
    if report.accuracy is not None:
        ds = report.dataset or {}
        lines += [
            "",
            f"## PoseTrack accuracy ({ds.get('data')}, split {ds.get('split')}, boxes {ds.get('boxes')}, "
            f"{ds.get('samples')} person boxes)",
            "",
            _md_table(ACCURACY_HEADERS, [accuracy_cells(r) for r in report.accuracy]),
        ]
    if report.task_accuracy is not None:
        lines += ["", f"## {task_title(report.task_dataset or {})}", ""]
        lines.append(_md_table(TASK_HEADERS, [task_cells(r) for r in report.task_accuracy]))
    if report.notes:
        lines += ["", "## Notes", ""]
        lines.extend(f"- {n}" for n in report.notes)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ConsoleColumn:
    """A console-table column: ``drop`` orders the columns left out first when the terminal is narrow.

    ``drop=None``: always shown (names, the headline numbers, footnote marks).
    """

    header: str
    right: bool = True
    drop: int | None = None


# (column, index into latency_cells; -1: the footnote mark)
LATENCY_CONSOLE: tuple[tuple[ConsoleColumn, int], ...] = (
    (ConsoleColumn("backend", right=False), 0),
    (ConsoleColumn("prec", right=False), 1),
    (ConsoleColumn("batch"), 2),
    (ConsoleColumn("p50 ms"), 3),
    (ConsoleColumn("p90 ms", drop=1), 4),
    (ConsoleColumn("speed-up (IQR)"), 7),
    (ConsoleColumn("hm rel", drop=2), 9),
    (ConsoleColumn("kp agree", drop=3), 10),
    (ConsoleColumn("", right=False), -1),
)
ACCURACY_CONSOLE: tuple[tuple[ConsoleColumn, int], ...] = (
    (ConsoleColumn("backend", right=False), 0),
    (ConsoleColumn("prec", right=False), 1),
    *((ConsoleColumn(g, drop=None if g == "Total" else 8 - i), 2 + i) for i, g in enumerate(GROUP_NAMES)),
    (ConsoleColumn("Δ Total"), 10),
    (ConsoleColumn("kp agree", drop=0), 11),
    (ConsoleColumn("", right=False), -1),
)
TASK_CONSOLE: tuple[tuple[ConsoleColumn, int], ...] = (
    (ConsoleColumn("backend", right=False), 0),
    (ConsoleColumn("prec", right=False), 1),
    (ConsoleColumn("PCK@0.05 %"), 2),
    (ConsoleColumn("95% CI", drop=2), 3),
    (ConsoleColumn("PCK drop"), 4),
    (ConsoleColumn("drop 95% CI", drop=5), 5),
    (ConsoleColumn("OKS AP %", drop=4), 6),
    (ConsoleColumn("AP drop", drop=3), 7),
    (ConsoleColumn("clips < 0.5", drop=1), 8),
    (ConsoleColumn("speed-up"), 9),
    (ConsoleColumn("", right=False), -1),
)


def fit_table(
    console: Any,
    title: str,
    columns: Sequence[ConsoleColumn],
    rows: Sequence[tuple[Sequence[str], str | None]],
) -> tuple[Any, list[str]]:
    """A rich table that fits ``console.width`` without cutting a value: (table, headers left out).

    Columns are left out in their ``drop`` order until every row fits on one line; should the kept
    columns still be too wide (long engine names), cells are stacked at their spaces (``2.47x`` over
    ``(2.41-2.50)``). Cells overflow by folding, never by an ellipsis, so a number or a name is never
    shown cut.
    """
    from rich import box
    from rich.markup import escape
    from rich.measure import Measurement
    from rich.table import Table

    def build(shown: list[int], stack: bool) -> Any:
        def text(s: str) -> str:
            return escape(s.replace(" ", "\n") if stack else s)

        table = Table(title=escape(title), box=box.SIMPLE_HEAD)
        for i in shown:
            c = columns[i]
            table.add_column(text(c.header), justify="right" if c.right else "left", overflow="fold")
        for cells, style in rows:
            table.add_row(*(text(cells[i]) for i in shown), style=style)
        return table

    wide = console.options.update_width(10_000)

    def fits(table: Any) -> bool:
        return bool(Measurement.get(console, wide, table).maximum <= console.width)

    shown = list(range(len(columns)))
    order = sorted((i for i, c in enumerate(columns) if c.drop is not None), key=lambda i: columns[i].drop)
    table = build(shown, stack=False)
    while order and not fits(table):
        shown.remove(order.pop(0))
        table = build(shown, stack=False)
    if not fits(table):
        table = build(shown, stack=True)
    left_out = [columns[i].header for i in range(len(columns)) if i not in shown]
    return table, left_out


def render_console(report: BenchReport, console: Any) -> None:
    """Print the header, the latency table and (with data) the accuracy tables with rich.

    Each table keeps to the columns that fit the terminal (80-120 columns and up; all columns are in
    the JSON / Markdown), never cutting a number or a name; notes, skip reasons and flags are
    numbered and printed below the tables.
    """
    from rich.console import Console

    if not console.is_terminal:  # a pipe or log has no width of its own
        console = Console(file=console.file, width=max(console.width, 120), highlight=False)

    for i, line in enumerate(header_lines(report)):
        style = "bold yellow" if report.random_weights and i == 0 else "dim"
        console.print(line, style=style, markup=False, highlight=False)
    footnotes: list[str] = []

    def mark(name: str, text: str) -> str:
        if not text:
            return ""
        footnotes.append(f"[{len(footnotes) + 1}] {name}: {text}")
        return f"[{len(footnotes)}]"

    def show(
        title: str, spec: Sequence[tuple[ConsoleColumn, int]], rows: list[tuple[list[str], str | None]]
    ) -> None:
        table, left_out = fit_table(console, title, [c for c, _ in spec], rows)
        console.print(table)
        if left_out:
            console.print(
                f"not shown at {console.width} columns: {', '.join(left_out)} "
                "(all are in --json / --markdown)",
                style="dim",
                markup=False,
                highlight=False,
            )

    def pick(cells: list[str], spec: Sequence[tuple[ConsoleColumn, int]], note: str) -> list[str]:
        return [note if i < 0 else cells[i] for _, i in spec]

    latency: list[tuple[list[str], str | None]] = []
    for row in report.latency:
        style = (
            "red" if row.nonfinite or row.status == "failed" else ("dim" if row.status == "skipped" else None)
        )
        latency.append((pick(latency_cells(row), LATENCY_CONSOLE, mark(row.name, _what(row))), style))
    show("latency and agreement with the reference (sample clip)", LATENCY_CONSOLE, latency)
    if report.accuracy is not None:
        acc = [
            (
                pick(accuracy_cells(arow), ACCURACY_CONSOLE, mark(arow.name, _what(arow))),
                "red" if arow.nonfinite or arow.status == "failed" else None,
            )
            for arow in report.accuracy
        ]
        show("PoseTrack mAP per joint group (poseval)", ACCURACY_CONSOLE, acc)
    if report.task_accuracy is not None:
        task = []
        for trow in report.task_accuracy:
            cells = task_cells(trow)
            style = "red" if trow.status == "failed" else None
            task.append((pick(cells, TASK_CONSOLE, mark(trow.name, cells[-1])), style))
        show(task_title(report.task_dataset or {}), TASK_CONSOLE, task)
    for line in footnotes:
        console.print(line, markup=False, highlight=False)
    for n in report.notes:
        console.print(f"note: {n}", markup=False, highlight=False)


# ------------------------------------------------------------------------------------------ plot


def plot_png(report: BenchReport) -> bytes:
    """Latency (p50, p90 as error bar) per backend and batch; mAP (or keypoint agreement) per backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    timed = [r for r in report.latency if r.p50_ms is not None]
    names = list(dict.fromkeys(r.name for r in timed))
    batches = sorted({r.batch for r in timed if r.batch is not None})
    fig = Figure(figsize=(11, 4.5), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    width = 0.8 / max(1, len(batches))
    x = np.arange(len(names))
    for i, b in enumerate(batches):
        vals, errs = [], []
        for n in names:
            row = next((r for r in timed if r.name == n and r.batch == b), None)
            vals.append(row.p50_ms if row and row.p50_ms is not None else np.nan)
            errs.append((row.p90_ms - row.p50_ms) if row and row.p90_ms is not None and row.p50_ms else 0.0)
        ax1.bar(
            x + (i - (len(batches) - 1) / 2) * width,
            vals,
            width,
            yerr=[np.zeros(len(errs)), errs],
            capsize=3,
            label=f"batch {b}",
        )
    ax1.set_xticks(x, names, rotation=30, ha="right")
    p50s = [r.p50_ms for r in timed if r.p50_ms]
    if p50s and max(p50s) / min(p50s) > 20:  # a 100x speed-up flattens the fast bars on a linear axis
        ax1.set_yscale("log")
    ax1.set_ylabel("latency per call, ms (p50, bar to p90)")
    ax1.set_title("latency")
    if batches:
        ax1.legend()
    if report.accuracy is not None:
        rows = [r for r in report.accuracy if r.groups is not None]
        ax2.bar([r.name for r in rows], [r.groups["Total"] if r.groups else np.nan for r in rows])
        ax2.set_ylabel("mAP (Total)")
        ax2.set_title(f"PoseTrack {(report.dataset or {}).get('split', '')} mAP")
        flagged = [r.name for r in report.accuracy if r.groups is None]
        if flagged:
            ax2.set_xlabel("not scored: " + ", ".join(flagged))
    else:
        rows2 = [r for r in report.latency if r.kp_agreement is not None and r.status != "reference"]
        labels = [f"{r.name} b{r.batch}" for r in rows2]
        ax2.bar(labels, [100.0 * (r.kp_agreement or 0.0) for r in rows2])
        ax2.set_ylim(0, 100)
        ax2.set_ylabel("keypoints within 0.1 px of the reference, %")
        ax2.set_title("keypoint agreement with the reference")
    for label in ax2.get_xticklabels():
        label.set_rotation(30)
        label.set_ha("right")
    title = f"{report.config.get('name')} on {report.machine.get('gpu') or report.machine.get('cpu')}"
    if report.random_weights:
        title += " (random weights)"
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ files


def write_report(
    report: BenchReport,
    json_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
    plot_path: str | Path | None = None,
) -> list[Path]:
    """Write the requested renderings atomically; returns the paths written."""
    written: list[Path] = []
    check_outputs({"json": json_path, "markdown": markdown_path, "plot": plot_path})
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(report.to_dict(), indent=2, sort_keys=False) + "\n")
        written.append(Path(json_path))
    if markdown_path is not None:
        write_text_atomic(markdown_path, to_markdown(report))
        written.append(Path(markdown_path))
    if plot_path is not None:
        write_bytes_atomic(plot_path, plot_png(report))
        written.append(Path(plot_path))
    return written
