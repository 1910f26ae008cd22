"""Benchmarks: interleaved latency of every backend, agreement with the PyTorch reference, PoseTrack mAP.

Names are imported on first use (PEP 562): the GPU evidence kit (:mod:`tdmi.gpukit`) imports
``plugin_bandwidth``, which must start on a bare GPU image without OpenCV or matplotlib, which the
harness modules below import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tdmi.benchmarks.accuracy import (
        BackendAccuracy,
        PoseTrackData,
        evaluate_split,
        load_posetrack,
        run_posetrack,
    )
    from tdmi.benchmarks.job import run_bench
    from tdmi.benchmarks.latency import (
        LatencyStats,
        Measurement,
        Runner,
        latency_stats,
        measure,
        percentile,
    )
    from tdmi.benchmarks.options import BenchOptions
    from tdmi.benchmarks.report import (
        AccuracyRow,
        BenchReport,
        LatencyRow,
        accuracy_rows,
        latency_rows,
    )
    from tdmi.benchmarks.report_console import render_console
    from tdmi.benchmarks.report_markdown import plot_png, to_markdown, write_report
    from tdmi.benchmarks.variants import VARIANTS, parse_backends, parse_batches
    from tdmi.eval.metrics import (
        AGREEMENT_TOL_PX,
        coords_agreement,
        heatmap_coords,
        heatmap_error,
        keypoint_agreement,
    )
    from tdmi.plugins.machine import machine_info

_HOME: dict[str, str] = {
    "BackendAccuracy": "tdmi.benchmarks.accuracy",
    "PoseTrackData": "tdmi.benchmarks.accuracy",
    "evaluate_split": "tdmi.benchmarks.accuracy",
    "load_posetrack": "tdmi.benchmarks.accuracy",
    "run_posetrack": "tdmi.benchmarks.accuracy",
    "AGREEMENT_TOL_PX": "tdmi.eval.metrics",
    "LatencyStats": "tdmi.benchmarks.latency",
    "Measurement": "tdmi.benchmarks.latency",
    "Runner": "tdmi.benchmarks.latency",
    "coords_agreement": "tdmi.eval.metrics",
    "heatmap_coords": "tdmi.eval.metrics",
    "heatmap_error": "tdmi.eval.metrics",
    "keypoint_agreement": "tdmi.eval.metrics",
    "latency_stats": "tdmi.benchmarks.latency",
    "measure": "tdmi.benchmarks.latency",
    "percentile": "tdmi.benchmarks.latency",
    "AccuracyRow": "tdmi.benchmarks.report",
    "BenchReport": "tdmi.benchmarks.report",
    "LatencyRow": "tdmi.benchmarks.report",
    "accuracy_rows": "tdmi.benchmarks.report",
    "latency_rows": "tdmi.benchmarks.report",
    "plot_png": "tdmi.benchmarks.report_markdown",
    "render_console": "tdmi.benchmarks.report_console",
    "to_markdown": "tdmi.benchmarks.report_markdown",
    "write_report": "tdmi.benchmarks.report_markdown",
    "VARIANTS": "tdmi.benchmarks.variants",
    "BenchOptions": "tdmi.benchmarks.options",
    "machine_info": "tdmi.plugins.machine",
    "parse_backends": "tdmi.benchmarks.variants",
    "parse_batches": "tdmi.benchmarks.variants",
    "run_bench": "tdmi.benchmarks.job",
}

__all__ = [
    "AGREEMENT_TOL_PX",
    "VARIANTS",
    "AccuracyRow",
    "BackendAccuracy",
    "BenchOptions",
    "BenchReport",
    "LatencyRow",
    "LatencyStats",
    "Measurement",
    "PoseTrackData",
    "Runner",
    "accuracy_rows",
    "coords_agreement",
    "evaluate_split",
    "heatmap_coords",
    "heatmap_error",
    "keypoint_agreement",
    "latency_rows",
    "latency_stats",
    "load_posetrack",
    "machine_info",
    "measure",
    "parse_backends",
    "parse_batches",
    "percentile",
    "plot_png",
    "render_console",
    "run_bench",
    "run_posetrack",
    "to_markdown",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
