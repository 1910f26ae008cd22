"""The benchmark report as text and files: table cells and headers (console and Markdown alike), the
header lines naming machine, weights and settings, the Markdown file, the PNG plot, and
:func:`write_report` (JSON, Markdown, PNG)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tdmi.benchmarks.latency import NOISY_LOAD
from tdmi.benchmarks.report import GROUP_NAMES, AccuracyRow, BenchReport, LatencyRow
from tdmi.benchmarks.task_accuracy import TASK_HEADERS, task_cells, task_title
from tdmi.utils import check_outputs, write_bytes_atomic, write_text_atomic


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


def what_label(row: LatencyRow | AccuracyRow) -> str:
    """The notes cell: status (when not ok), label, flags and note."""
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
        what_label(row),
    ]


ACCURACY_HEADERS = ("backend", "precision", *GROUP_NAMES, "Δ Total", "kp agree", "notes")


def accuracy_cells(row: AccuracyRow) -> list[str]:
    name = f"{row.name} (ref)" if row.status == "reference" else row.name
    groups = [_num((row.groups or {}).get(g), ".1f") if row.groups else "—" for g in GROUP_NAMES]
    delta = "—" if row.delta_total is None else f"{row.delta_total:+.2f}"
    return [name, row.precision, *groups, delta, _pct(row.kp_agreement), what_label(row)]


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
