"""ONNX export, precision variants, calibration and the fused TemporalDiff rewrite.

Order of work: ``export_onnx`` (FP32, checked, verified) -> optional ``convert_fp16`` /
``quantize_int8`` on that unfused graph -> optional ``fuse_temporal_diff`` for TensorRT.
"""

from tdmi.export.calibration import CalibrationSet, build_calibration_set, load_calibration
from tdmi.export.fuse import DiffPattern, find_temporal_diffs, fuse_temporal_diff
from tdmi.export.metadata import inspect, read_metadata, update_metadata, write_metadata
from tdmi.export.onnx_export import (
    ExportResult,
    HeatmapError,
    VerificationReport,
    compare_heatmaps,
    export_onnx,
)
from tdmi.export.ort_ops import run_onnx
from tdmi.export.precision import PrecisionResult, convert_fp16, quantize_int8

__all__ = [
    "CalibrationSet",
    "DiffPattern",
    "ExportResult",
    "HeatmapError",
    "PrecisionResult",
    "VerificationReport",
    "build_calibration_set",
    "compare_heatmaps",
    "convert_fp16",
    "export_onnx",
    "find_temporal_diffs",
    "fuse_temporal_diff",
    "inspect",
    "load_calibration",
    "quantize_int8",
    "read_metadata",
    "run_onnx",
    "update_metadata",
    "write_metadata",
]
