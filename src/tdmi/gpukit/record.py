"""A section's recorder (on disk after every row) and the kit's JSON / Markdown report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tdmi.gpukit.options import SECTIONS, SectionSkipped
from tdmi.utils import write_text_atomic


class Recorder:
    """A section's result, written to disk after every row so a killed worker still leaves data."""

    def __init__(self, path: Path | None, deadline: float) -> None:
        self.path = path
        self.deadline = deadline  # time.time() after which no new row starts
        self.data: dict[str, Any] = {"status": "ok", "reason": "", "notes": []}
        self.flush()

    def flush(self) -> None:
        if self.path is not None:
            write_text_atomic(self.path, json.dumps(self.data, default=json_default) + "\n")

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.flush()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.flush()

    def time_left(self) -> float:
        return self.deadline - time.time()

    def degrade(self, reason: str) -> None:
        """Mark the section partial (unless it already failed) and say why."""
        if self.data["status"] == "ok":
            self.data["status"] = "partial"
        if reason and reason not in self.data["reason"]:
            self.data["reason"] = "; ".join(r for r in (self.data["reason"], reason) if r)
        self.flush()

    def fail(self, reason: str) -> None:
        self.data["status"] = "failed"
        self.data["reason"] = "; ".join(r for r in (self.data["reason"], reason) if r)
        self.flush()

    def row(
        self, table: str, base: dict[str, Any], fn: Callable[[], dict[str, Any]], need_s: float = 0.0
    ) -> dict[str, Any]:
        """Run one row: its figures, or its skip reason, or its error, never an exception."""
        row = dict(base)
        rows = self.data.setdefault(table, [])
        if self.time_left() < need_s:
            row.update(status="not_run", reason=f"time guard: {max(self.time_left(), 0):.0f} s left")
            rows.append(row)
            self.degrade("rows left out by the time guard")
            return row
        t0 = time.perf_counter()
        try:
            row.update(fn())
            row.setdefault("status", "ok")
        except SectionSkipped as e:
            row.update(status="skipped", reason=str(e))
        except Exception as e:
            row.update(status="failed", error=one_line(e))
            self.degrade(f"{table}: {sum(r.get('status') == 'failed' for r in rows) + 1} row(s) failed")
        row["seconds"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
        self.flush()
        return row


def json_default(obj: Any) -> Any:
    """numpy scalars and paths, as JSON holds them."""
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def one_line(exc: BaseException) -> str:
    """An error as one line of a report: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:400] if text else ''}".rstrip(": ")


# -------------------------------------------------------------------------------------- helpers


def write_report(report: dict[str, Any], json_path: Path | None, md_path: Path | None) -> None:
    """The report as JSON and / or Markdown, each written atomically (a reader never sees half)."""
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(report, indent=2, default=json_default) + "\n")
    if md_path is not None:
        write_text_atomic(md_path, to_markdown(report))


# ---------------------------------------------------------------------------------------- markdown


def cell(value: Any) -> str:
    """One Markdown table cell: short numbers, yes/no, and no stray pipes or newlines."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.2e}"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    if isinstance(value, list):
        return "x".join(map(str, value))
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    if not rows:
        return ["(no rows)", ""]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        why = r.get("error") or r.get("reason")
        cells = [cell(r.get(c)) for c in columns]
        if why and r.get("status") != "ok":
            cells[-1] = cell(why)
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


MD_COLUMNS: dict[str, list[str]] = {
    "kernel_correctness": [
        "path", "case", "dtype", "align", "status", "vector_path", "bit_exact", "mismatches", "max_abs_diff",
    ],
    "kernel_bandwidth": [
        "stage", "dtype", "batch", "status", "kernel_gbps", "copy_gbps", "torch_gbps", "compiled_gbps",
        "kernel_vs_copy", "speedup_vs_torch", "speedup_vs_compiled", "compile_s",
    ],
    "torch_latency": [
        "variant", "batch", "status", "p50_ms", "p90_ms", "clips_per_s", "speedup_vs_eager_fp32",
        "peak_mem_mib", "first_call_s", "heatmap_max_rel", "keypoint_agreement",
    ],
    "dcn_forms": [
        "form", "dtype", "batch", "status", "p50_ms", "time_vs_torchvision", "max_abs_err", "max_rel_err",
    ],
    "ort_cpu": ["backend", "batch", "status", "p50_ms", "p90_ms", "heatmap_max_abs", "keypoint_agreement"],
}  # fmt: skip


MD_FACTS = (
    "setup",
    "paths",
    "counts",
    "summary",
    "goals_met",
    "export_s",
    "session_s",
    "ort_speedup_vs_torch",
)


def to_markdown(report: dict[str, Any]) -> str:
    secs = report["sections"]
    env = secs.get("environment", {})
    gpu = env.get("gpu") or {}
    machine = gpu.get("name") if gpu.get("available") else "no GPU"
    lines = [
        "# TDMI GPU evidence",
        "",
        f"Machine: **{machine}**; started {report['started_utc']}, "
        f"commit {env.get('git_commit') or 'unknown'}; options {cell(json.dumps(report['options']))}.",
        "",
        "| section | status | ran / skipped | seconds | reason |",
        "|---|---|---|---|---|",
    ]
    for name in SECTIONS:
        s = secs[name]
        c = s.get("counts")
        ran = f"{c['ran']} / {c['skipped'] + c['not_run']}" if c else "-"
        cells = (s["title"], s["status"], ran, cell(s.get("seconds")), cell(s.get("reason")))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name in SECTIONS:
        s = secs[name]
        lines += [f"## {s['title']}", "", f"Status: **{s['status']}**. {s.get('reason') or ''}".rstrip(), ""]
        if name == "environment":
            for key in ("host", "torch", "gpu", "packages"):
                if key in s:
                    lines.append(f"- {key}: `{json.dumps(s[key], default=str)}`")
            lines.append("")
        for key in MD_FACTS:
            if key in s:
                lines.append(f"- {key}: `{json.dumps(s[key], default=json_default)}`")
        if name in MD_COLUMNS:
            rows = s.get("rows") or s.get("cases") or []
            lines += ["", *_table(rows, MD_COLUMNS[name])]
        for note in s.get("notes", []):
            lines.append(f"- note: {note}")
        if s.get("log_tail"):
            lines += ["", "```", s["log_tail"][-1500:], "```", ""]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- CLI
