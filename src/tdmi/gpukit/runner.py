"""The time-guarded run: sections in :data:`~tdmi.gpukit.options.RUN_ORDER`, each judged by its subject.

A section is ``ok`` only when the subject its title names ran (:data:`SUBJECTS`, judged by
:mod:`tdmi.checks`), and the report is on disk after every section.
"""

from __future__ import annotations

import datetime as _dt
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tdmi.checks import Tally, judge, tally
from tdmi.errors import TdmiError
from tdmi.gpukit.dcn_forms import section_dcn_forms
from tdmi.gpukit.environment import section_environment
from tdmi.gpukit.isolate import run_isolated
from tdmi.gpukit.kernel_bandwidth import section_kernel_bandwidth
from tdmi.gpukit.kernel_correctness import section_kernel_correctness
from tdmi.gpukit.options import (
    DEFAULT_TIME_LIMIT_S,
    RESERVE_PER_LATER_SECTION_S,
    RUN_ORDER,
    SECTION_CAPS_S,
    SECTIONS,
    SOFT_MARGIN_S,
    TITLES,
    Options,
    SectionSkipped,
    TimeGuard,
)
from tdmi.gpukit.ort_cpu import section_ort_cpu
from tdmi.gpukit.record import Recorder, one_line, write_report
from tdmi.gpukit.torch_latency import section_torch_latency


def _as_kernel_row(row: dict[str, Any]) -> dict[str, Any]:
    """A bandwidth row counts for the kernel only when the kernel itself was timed."""
    if row.get("status") == "ok" and row.get("kernel_gbps") is None:
        return {"status": "skipped", "reason": row.get("kernel_note") or "the kernel was not timed"}
    return row


@dataclass(frozen=True)
class Subject:
    """What a section's title promises: the rows that must run for the section to be ``ok``."""

    table: str
    what: str
    rows: Callable[[dict[str, Any]], bool] = lambda r: True
    as_item: Callable[[dict[str, Any]], dict[str, Any]] = lambda r: r


SUBJECTS: dict[str, Subject] = {
    "kernel_correctness": Subject(
        "cases",
        "PTX kernel cases (cuda-python, cupy)",
        rows=lambda r: r.get("path") in ("cuda-python", "cupy"),
    ),
    "kernel_bandwidth": Subject("rows", "kernel bandwidth rows", as_item=_as_kernel_row),
    "torch_latency": Subject("rows", "latency rows (variant x batch)"),
    "dcn_forms": Subject("rows", "DCN rows (form x dtype x batch)"),
    "ort_cpu": Subject("rows", "backend rows"),
}


def subject_counts(name: str, data: dict[str, Any]) -> Tally | None:
    """How much of section ``name``'s subject ran, from its recorded rows."""
    subject = SUBJECTS.get(name)
    if subject is None:
        return None
    return tally(subject.as_item(r) for r in data.get(subject.table, []) if subject.rows(r))


def apply_subject(name: str, data: dict[str, Any]) -> None:
    """Record the counts and make the status honest: nothing of the subject ran is never ``ok``."""
    counts = subject_counts(name, data)
    if counts is None:
        return
    data["counts"] = counts.to_dict()
    status, reason = judge(data["status"], counts, SUBJECTS[name].what)
    data["status"] = status
    if reason:
        data["reason"] = "; ".join(r for r in (reason, data.get("reason")) if r)


SECTION_FUNCS: dict[str, Callable[[Options, Recorder], None]] = {
    "environment": section_environment,
    "kernel_correctness": section_kernel_correctness,
    "kernel_bandwidth": section_kernel_bandwidth,
    "torch_latency": section_torch_latency,
    "dcn_forms": section_dcn_forms,
    "ort_cpu": section_ort_cpu,
}


# ------------------------------------------------------------------------------------------ runner


def run_section(name: str, opts: Options, out: Path | None, deadline: float) -> dict[str, Any]:
    """One section in this process; its result (status, reason, figures), never an exception."""
    rec = Recorder(out, deadline)
    t0 = time.perf_counter()
    try:
        SECTION_FUNCS[name](opts, rec)
    except SectionSkipped as e:
        rec.data.update(status="skipped", reason=str(e))
    except TimeGuard as e:
        rec.degrade(str(e))
    except Exception as e:
        rec.data.update(status="failed", reason=one_line(e), traceback=traceback.format_exc()[-4000:])
    apply_subject(name, rec.data)
    rec.data["seconds"] = round(time.perf_counter() - t0, 2)
    rec.flush()
    return rec.data


def run_kit(
    opts: Options,
    sections: list[str] | None = None,
    time_limit: float = DEFAULT_TIME_LIMIT_S,
    json_path: Path | None = None,
    md_path: Path | None = None,
    isolate: bool = True,
    on_section: Callable[[str, dict[str, Any]], None] | None = None,
    on_start: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Run the sections (in :data:`RUN_ORDER`) under the global ``time_limit``; the report is on disk
    after each one."""
    unknown = sorted(set(sections or ()) - set(SECTIONS))
    if unknown:
        raise TdmiError(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    chosen = [n for n in RUN_ORDER if sections is None or n in sections]
    start = time.time()
    report: dict[str, Any] = {
        "kit": "tdmi-gpu-check",
        "schema": 1,
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "options": asdict(opts) | {"time_limit_s": time_limit, "isolated": isolate},
        "argv": sys.argv[1:],
        "selected": chosen,
        "sections": {
            n: {"title": TITLES[n], "status": "not_run", "reason": "not selected"} for n in SECTIONS
        },
    }
    for n in chosen:
        report["sections"][n] = {"title": TITLES[n], "status": "not_run", "reason": "pending"}
    write_report(report, json_path, md_path)
    with tempfile.TemporaryDirectory(prefix="tdmi-gpu-check-") as tmp:
        for i, name in enumerate(chosen):
            later = len(chosen) - i - 1
            remaining = time_limit - (time.time() - start)
            timeout = min(SECTION_CAPS_S[name], remaining - later * RESERVE_PER_LATER_SECTION_S)
            if timeout < SOFT_MARGIN_S + 1:
                result: dict[str, Any] = {
                    "status": "not_run",
                    "reason": f"global time guard ({time_limit:.0f} s) reached",
                }
            else:
                if on_start is not None:
                    on_start(name, timeout)
                if isolate:
                    result = run_isolated(name, opts, timeout, Path(tmp))
                else:
                    result = run_section(name, opts, None, time.time() + timeout - SOFT_MARGIN_S)
            report["sections"][name] = {"title": TITLES[name], **result}
            report["elapsed_s"] = round(time.time() - start, 1)
            write_report(report, json_path, md_path)
            if on_section is not None:
                on_section(name, report["sections"][name])
    report["finished_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    write_report(report, json_path, md_path)
    return report


def exit_code(report: dict[str, Any]) -> int:
    """0 when every selected section ran (ok, partial or skipped with its reason), else 1."""
    secs = report["sections"]
    bad = [n for n in report.get("selected", secs) if secs[n]["status"] in ("failed", "timeout", "not_run")]
    return 1 if bad else 0
