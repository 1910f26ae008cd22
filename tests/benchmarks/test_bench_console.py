"""The bench's console tables fit 80-120 columns without cutting a number or a name (issue 20)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tdmi.benchmarks.report import AccuracyRow, BenchReport, LatencyRow, skipped_row
from tdmi.benchmarks.report_console import render_console
from tdmi.benchmarks.report_markdown import accuracy_cells, latency_cells, speedup_cell
from tdmi.benchmarks.task_accuracy import TaskAccuracyRow, task_cells

CHECK = "accuracy check (TensorRT-targeted graph)"


def _latency(
    name: str, prec: str, p50: float, speed: tuple[float, float, float] | None, **kw: object
) -> LatencyRow:
    row = LatencyRow(
        name, "onnxruntime", prec, "cpu", 1, "ok", p50_ms=p50, p90_ms=p50 * 1.07, p99_ms=p50 * 1.2
    )
    row.mean_ms, row.throughput, row.iters = p50 * 1.01, 1000.0 / p50, 10
    if speed is not None:
        row.speedup, row.speedup_p25, row.speedup_p75 = speed
        row.speedup_rounds = 10
    for k, v in kw.items():
        setattr(row, k, v)
    return row


def _report() -> BenchReport:
    """Rows as the default W48 job and ``--variants all --data ... --accuracy synthetic`` make them."""
    ref = _latency("torch", "fp32", 1523.4, None, status="reference", backend="torch")
    ref.speedup = 1.0
    latency = [
        ref,
        _latency(
            "ort-fp32",
            "fp32",
            152.3,
            (10.01, 9.87, 10.24),
            hm_max_abs=3.1e-6,
            hm_max_rel=8.22e-08,
            kp_agreement=1.0,
            kp_max_dev=0.0,
        ),
        _latency(
            "ort-int8",
            "int8",
            61.7,
            (24.69, 24.11, 25.02),
            hm_max_abs=2.2e-3,
            hm_max_rel=3.01e-03,
            kp_agreement=0.941,
            kp_max_dev=0.731,
        ),
        LatencyRow(
            "ort-fp16-trtgraph",
            "onnxruntime",
            "fp16",
            "cpu",
            1,
            "ok",
            label=CHECK,
            hm_max_rel=4.4e-4,
            kp_agreement=0.996,
        ),
        skipped_row("torch-cuda", "torch", "fp32", "cuda", "PyTorch sees no CUDA GPU"),
        skipped_row("trt", "tensorrt", "—", "cuda", "TensorRT is not installed"),
    ]
    groups = dict(
        zip(
            ("Head", "Shou", "Elb", "Wri", "Hip", "Knee", "Ankl", "Total"),
            (81.2, 79.4, 71.0, 63.3, 70.1, 66.8, 60.2, 71.4),
            strict=True,
        )
    )
    accuracy = [
        AccuracyRow("torch", "torch", "fp32", "reference", groups=groups),
        AccuracyRow(
            "ort-fp16-trtgraph",
            "onnxruntime",
            "fp16",
            "ok",
            label=CHECK,
            groups={k: v - 0.13 for k, v in groups.items()},
            delta_total=-0.13,
            kp_agreement=0.993,
        ),
    ]
    task = [
        TaskAccuracyRow(
            "ort-fp32",
            "fp32",
            "reference",
            pck=87.52,
            pck_ci=(84.1, 90.3),
            oks_ap=71.33,
            failed_clips=2,
            speedup=1.0,
            speedup_p25=1.0,
            speedup_p75=1.0,
        ),
        TaskAccuracyRow(
            "torch",
            "fp32",
            "ok",
            pck=87.52,
            pck_ci=(84.1, 90.3),
            drop_pck=0.0,
            drop_pck_ci=(-0.02, 0.02),
            oks_ap=71.33,
            drop_oks_ap=0.0,
            failed_clips=2,
            speedup=0.02,
            speedup_p25=0.02,
            speedup_p75=0.05,
        ),
        TaskAccuracyRow(
            "ort-int8",
            "int8",
            "ok",
            pck=86.91,
            pck_ci=(83.4, 89.8),
            drop_pck=0.61,
            drop_pck_ci=(0.12, 1.13),
            oks_ap=70.02,
            drop_oks_ap=1.31,
            failed_clips=3,
            speedup=2.47,
            speedup_p25=2.41,
            speedup_p75=2.5,
        ),
        TaskAccuracyRow(
            "ort-fp16-trtgraph",
            "fp16",
            "ok",
            label=CHECK,
            pck=87.44,
            pck_ci=(84.0, 90.2),
            drop_pck=0.08,
            drop_pck_ci=(-0.05, 0.21),
            oks_ap=71.2,
            drop_oks_ap=0.13,
            failed_clips=2,
        ),
    ]
    return BenchReport(
        machine={
            "cpu": "AMD EPYC 7B13",
            "cpu_cores": 2,
            "cpu_cores_usable": 2,
            "versions": {"torch": "2.14.1"},
        },
        config={"name": "tdmi-w48-384x288", "input_size": [384, 288], "num_frames": 3},
        weights="random (seed 0, untrained)",
        random_weights=True,
        reference="torch",
        settings={"cache": "/tmp/c", "warmup": 2, "iters": 10, "threads": 2},
        latency=latency,
        accuracy=accuracy,
        dataset={"data": "fixtures", "split": "val", "boxes": "gt", "samples": 12},
        task_accuracy=task,
        task_dataset={"clips": 64, "seed": 1234, "speedup_baseline": "ort-fp32", "speedup_batch": 1},
    )


def _render(width: int) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=True, color_system=None, highlight=False)
    render_console(_report(), console)
    return buf.getvalue()


@pytest.mark.parametrize("width", [80, 100, 120])
def test_tables_fit_the_width_and_cut_nothing(width: int) -> None:
    out = _render(width)
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= width
    report = _report()
    # Every name and every headline number appears whole (a cut one would not match).
    for row in report.latency:
        cells = latency_cells(row)
        assert cells[0] in out
        if row.p50_ms is not None:
            assert cells[3] in out, (cells[3], out)
        if row.speedup is not None and row.status != "reference":
            for part in speedup_cell(row).split():
                assert part in out, (part, out)
    for arow in report.accuracy or []:
        cells = accuracy_cells(arow)
        assert cells[0] in out and cells[9] in out and cells[10] in out  # name, Total, Δ Total
    for trow in report.task_accuracy or []:
        cells = task_cells(trow)
        assert cells[0] in out and cells[2] in out and cells[4] in out  # name, PCK, PCK drop
        for part in cells[9].split():  # speed-up and its IQR, e.g. "(0.02-0.05)"
            assert part in out, (part, out)
    assert CHECK in out  # labels go to the footnotes, whole
    if width < 120:
        assert "not shown at" in out  # what was left out is said, not silently lost


def test_wide_terminal_shows_every_column() -> None:
    out = _render(200)
    assert "not shown at" not in out
    for header in ("p90 ms", "hm rel", "kp agree", "95% CI", "drop 95% CI", "clips < 0.5", "Head", "Ankl"):
        assert header in out
    assert "-0.05 to +0.21" in out  # the drop interval, with no ellipsis for a separator


def test_narrow_terminal_drops_low_priority_columns_first() -> None:
    out = _render(80)
    latency = out[out.index("latency and agreement") : out.index("PoseTrack mAP")]
    table = latency[: latency.index("not shown at")]
    assert "p90 ms" not in table and "p50 ms" in table and "speed-up (IQR)" in table
    assert "not shown at 80 columns: p90 ms" in latency


def test_cells_stack_at_spaces_when_the_kept_columns_are_too_wide() -> None:
    from tdmi.benchmarks.report_console import ConsoleColumn, fit_table

    buf = io.StringIO()
    console = Console(file=buf, width=38, force_terminal=True, color_system=None)
    columns = [ConsoleColumn("backend", right=False), ConsoleColumn("speed-up (IQR)")]
    table, left_out = fit_table(console, "t", columns, [(["trt-int8:w48-b4", "24.69x (24.11-25.02)"], None)])
    console.print(table)
    out = buf.getvalue()
    assert left_out == [] and "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 38
    line = next(x for x in out.splitlines() if "trt-int8:w48-b4" in x)
    assert "24.69x" in line and "(24.11-25.02)" not in line  # stacked: the interval on the next line
    assert "(24.11-25.02)" in out
