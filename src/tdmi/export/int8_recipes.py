"""INT8 recipes: our own histogram calibration, regions kept in higher precision, and the search for them.

Why our own calibration: ONNX Runtime <= 1.32's ``quantize_static`` builds its entropy calibrator
with ``num_bins == num_quantized_bins == 128`` and no option to change it, so the KL search has one
candidate (the full range) and "entropy" equals "max"; its percentile calibrator likewise uses a
fixed bin count. We collect the histograms ourselves (2048 bins of |x| over all calibration clips,
one batch at a time), pick ranges by percentile or by TensorRT's KL-divergence rule, and hand them
to ``quantize_static`` as a calibration cache, so ORT quantizes with exactly our ranges.

A *region* is a block of the network named after the module scope the exporter records
(``backbone/stage3``, ``tde/stage2``, ``tde/cascade``, ``rdm``, ``head``, ...), or a single node.
A recipe says which regions stay FP32, how activations are calibrated, per-channel or per-tensor
weights, and 8- or 16-bit activations (A16W8, which ONNX Runtime supports in QDQ form).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tdmi.artifacts.onnx_meta import Granularity, RangeMethod
from tdmi.errors import ExportError

RANGE_METHODS: tuple[str, ...] = ("max", "percentile", "entropy")
HIST_BINS = 2048
DEFAULT_PERCENTILE = 99.99
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
TARGETS = ("onnxruntime", "tensorrt", "openvino")
# The range methods each target's quantizer offers: NNCF (OpenVINO) has min/max and a quantile
# estimator (the recipe's percentile), no KL search.
TARGET_CALIBRATIONS: dict[str, tuple[str, ...]] = {
    "onnxruntime": RANGE_METHODS,
    "tensorrt": ("max", "entropy"),
    "openvino": ("max", "percentile"),
}
# ONNX op type -> the OpenVINO op types NNCF puts quantizers on for it. An OpenVINO recipe names
# ONNX op types like the others; the OpenVINO types of every other entry are NNCF-ignored.
OV_OP_TYPES: dict[str, tuple[str, ...]] = {
    "Conv": ("Convolution", "GroupConvolution"),
    "ConvTranspose": ("ConvolutionBackpropData", "GroupConvolutionBackpropData"),
    "MatMul": ("MatMul",),
    "Gemm": ("MatMul",),
    "Add": ("Add",),
    "Mul": ("Multiply",),
    "Sub": ("Subtract",),
    "Concat": ("Concat",),
    "AveragePool": ("AvgPool",),
    "MaxPool": ("MaxPool",),
    "Resize": ("Interpolate",),
    "ReduceMean": ("ReduceMean",),
    "GridSample": ("GridSample",),
}
DEFAULT_OP_SET = {"tensorrt": "ModelOpt default", "openvino": "NNCF default"}


@dataclass(frozen=True)
class Int8Recipe:
    """How to quantize: serialisable to JSON and embedded in the graph's metadata."""

    target: str = "onnxruntime"  # "onnxruntime" | "tensorrt" | "openvino"
    calibration: str = "entropy"  # max | percentile | entropy
    percentile: float = DEFAULT_PERCENTILE
    per_channel: bool = True  # ORT / OpenVINO: per-channel weight scales (per-tensor when False)
    activations: str = "int8"  # ORT: "int8" (U8S8) or "int16" (A16W8)
    fp32_regions: tuple[str, ...] = ("head", "rdm")  # regions (or node names) left unquantized
    op_types: tuple[str, ...] = QUANTIZED_OPS

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ExportError(f"unknown INT8 target {self.target!r}: use tensorrt, onnxruntime or openvino")
        allowed = TARGET_CALIBRATIONS[self.target]
        if self.calibration not in allowed:
            raise ExportError(
                f"calibration {self.calibration!r} is not available for {self.target}: "
                f"use {', '.join(allowed)}"
            )
        if not 50.0 < self.percentile <= 100.0:
            raise ExportError(f"the calibration percentile must be in (50, 100], got {self.percentile}")
        if self.activations not in ("int8", "int16"):
            raise ExportError(f"activations must be int8 or int16, got {self.activations!r}")
        if self.activations == "int16" and self.target != "onnxruntime":
            raise ExportError(f"A16W8 (int16 activations) is an ONNX Runtime recipe, not {self.target}'s")
        check_op_types(self.op_types, self.target)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fp32_regions"] = list(self.fp32_regions)
        d["op_types"] = list(self.op_types)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Int8Recipe:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for k in ("fp32_regions", "op_types"):
            if k in known:
                known[k] = tuple(known[k])
        return cls(**known)

    def label(self) -> str:
        parts = [self.calibration + (f"{self.percentile:g}" if self.calibration == "percentile" else "")]
        if self.target == "onnxruntime":
            parts.append("A16W8" if self.activations == "int16" else "A8W8")
        if self.target in ("onnxruntime", "openvino"):
            parts.append("per-channel" if self.per_channel else "per-tensor")
        parts.append("fp32: " + (",".join(self.fp32_regions) if self.fp32_regions else "none"))
        if self.target != "onnxruntime" or self.op_types != QUANTIZED_OPS:
            default = DEFAULT_OP_SET.get(self.target, "ModelOpt default")
            parts.append("ops: " + (",".join(self.op_types) if self.op_types else default))
        return " ".join(parts)


# ------------------------------------------------------------------------------------------ regions


def region_of(node_name: str, granularity: Granularity = "block") -> str | None:
    """The block a node belongs to (``backbone/stage3``, ``tde/cascade``, ``head``...), or the node itself.

    Backbone stem convolutions form ``backbone/stem``, all transitions ``backbone/transitions``; the
    RDM and the head are one region each. Unscoped nodes (shape plumbing) belong to no region.
    """
    if granularity == "node":
        return node_name
    parts = node_name.split("/")
    if len(parts) < 2:
        return None
    top = parts[0]
    if top in ("head", "rdm"):
        return top
    if top == "backbone":
        if parts[1].startswith("transition"):
            return "backbone/transitions"
        if parts[1].startswith("stage") or parts[1].startswith("layer"):
            return f"backbone/{parts[1]}"
        return "backbone/stem"
    if top == "tde":
        return f"tde/{parts[1]}"
    return None


def quantizable_regions(
    model: onnx.ModelProto, granularity: Granularity = "block", op_types: Sequence[str] = QUANTIZED_OPS
) -> dict[str, list[str]]:
    """Region -> its quantizable compute nodes, in graph order (temporal differences never included)."""
    out: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.op_type not in op_types or is_temporal_difference(n.name):
            continue
        region = region_of(n.name, granularity)
        if region is not None:
            out.setdefault(region, []).append(n.name)
    return out


def is_temporal_difference(name: str) -> bool:
    """A temporal-difference node: never quantized (a difference of two quantized features loses its bits)."""
    return name.startswith("tde/") and "/diff/" in name


def nodes_in(model: onnx.ModelProto, regions: Sequence[str]) -> list[str]:
    """Every node of the named regions (block names, or exact node names)."""
    return names_in([n.name for n in model.graph.node], regions)


def names_in(names: Sequence[str], regions: Sequence[str]) -> list[str]:
    """The node names (ONNX nodes, or OpenVINO ops, which keep them) that belong to ``regions``."""
    wanted = set(regions)
    return [
        name
        for name in names
        if name in wanted
        or region_of(name, "block") in wanted
        or any(name.startswith(r.rstrip("/") + "/") for r in wanted)
    ]


# ----------------------------------------------------------------------------------- calibration


@dataclass
class ActivationStats:
    """Per-tensor min/max and a histogram of |x| (``HIST_BINS`` bins over [0, absmax])."""

    minimum: dict[str, float] = field(default_factory=dict)
    maximum: dict[str, float] = field(default_factory=dict)
    hist: dict[str, np.ndarray] = field(default_factory=dict)
    clips: int = 0


PROBE_BYTES = 384 * 1024 * 1024  # activations one calibration run may hand back (W48: ~2.3 GB in all)


def activation_infos(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The float intermediate tensors (shape-inferred value infos), in graph order, outputs excluded."""
    inferred = onnx.shape_inference.infer_shapes(model)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    existing = {o.name for o in model.graph.output}
    return [
        vi
        for vi in inferred.graph.value_info
        if vi.type.tensor_type.elem_type in floats and vi.name not in existing
    ]


def activation_probe(model: onnx.ModelProto, infos: Sequence[onnx.ValueInfoProto]) -> onnx.ModelProto:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(infos)
    return probe


def _nbytes(vi: onnx.ValueInfoProto, batch: int) -> int:
    """Estimated bytes of one tensor at ``batch`` (symbolic dims like ``3*batch`` evaluated)."""
    n = 2 if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 else 4
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            n *= max(d.dim_value, 1)
            continue
        for token in d.dim_param.split("*"):
            token = token.strip()
            n *= int(token) if token.isdigit() else (batch if "batch" in token.lower() else 1)
    return n


def probe_groups(
    infos: Sequence[onnx.ValueInfoProto], batch: int, budget: int
) -> list[list[onnx.ValueInfoProto]]:
    """Consecutive groups of tensors, each within ``budget`` bytes at ``batch`` (at least one group)."""
    groups: list[list[onnx.ValueInfoProto]] = [[]]
    size = 0
    for vi in infos:
        b = _nbytes(vi, batch)
        if groups[-1] and size + b > budget:
            groups.append([])
            size = 0
        groups[-1].append(vi)
        size += b
    return groups


def collect_stats(
    model: onnx.ModelProto, clips: np.ndarray, batch: int = 1, budget: int = PROBE_BYTES
) -> ActivationStats:
    """Two passes over ``clips``: ranges, then |x| histograms on those ranges.

    Memory: the activations of one batch, at most ``budget`` bytes of them at a time. Exposing every
    activation of W48 at once made ONNX Runtime hold ~2.3 GB per clip, two or three times over
    (its buffers, the NumPy copies, the previous batch's); the tensors are therefore probed in
    groups, one probe session per group, each running the same clips. The graph, the clips and the
    arithmetic are the same, so the statistics are too (only the calibration time grows).
    """
    from tdmi.export.ort_ops import make_session

    usable = clips.shape[0] - clips.shape[0] % batch
    if usable < 1:
        raise ExportError(f"calibration needs at least {batch} clip(s), got {clips.shape[0]}")
    stats = ActivationStats(clips=usable)
    infos = activation_infos(model)
    for g, group in enumerate(probe_groups(infos, batch, budget)):
        sess = make_session(activation_probe(model, group), arena=False)
        input_name = sess.get_inputs()[0].name
        out_names = [o.name for o in sess.get_outputs()]
        if g:  # the model's own outputs and its input are counted with the first group only
            out_names = [vi.name for vi in group]
        _collect(sess, input_name, out_names, clips[:usable], batch, stats, with_input=g == 0)
        del sess
    return stats


def _collect(
    sess: Any,
    input_name: str,
    out_names: list[str],
    clips: np.ndarray,
    batch: int,
    stats: ActivationStats,
    with_input: bool,
) -> None:
    """Both passes of ``collect_stats`` for the tensors ``out_names`` of one probe session."""

    def batches() -> Any:
        for i in range(0, clips.shape[0], batch):
            feed = clips[i : i + batch]
            outs = sess.run(out_names, {input_name: feed})
            yield [(input_name, feed)] * with_input + list(zip(out_names, outs, strict=True))
            del outs

    for outs in batches():
        for name, arr in outs:
            a = np.asarray(arr)
            if not a.size or not np.issubdtype(a.dtype, np.floating):
                continue
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
            stats.minimum[name] = min(stats.minimum.get(name, lo), lo)
            stats.maximum[name] = max(stats.maximum.get(name, hi), hi)
        del outs  # before the next batch runs: one batch's activations at a time
    for outs in batches():
        for name, arr in outs:
            if name not in stats.minimum:
                continue
            top = max(abs(stats.minimum[name]), abs(stats.maximum[name]))
            if top <= 0:
                continue
            h, _ = np.histogram(np.abs(np.asarray(arr, np.float32)), bins=HIST_BINS, range=(0.0, top))
            stats.hist[name] = stats.hist.get(name, 0) + h
        del outs


def percentile_threshold(hist: np.ndarray, top: float, pct: float) -> float:
    """|x| below which ``pct`` % of the values lie (upper bin edge, never above ``top``)."""
    cum = np.cumsum(hist, dtype=np.float64)
    if cum[-1] <= 0:
        return top
    idx = int(np.searchsorted(cum, cum[-1] * pct / 100.0, side="left"))
    return float(top * min(idx + 1, hist.size) / hist.size)


def entropy_threshold(hist: np.ndarray, top: float, levels: int = 128, candidates: int = 160) -> float:
    """TensorRT's KL rule: the clipping threshold whose ``levels``-level quantization loses least."""
    hist = np.asarray(hist, dtype=np.float64)
    n = hist.size
    if hist.sum() <= 0 or n <= levels:
        return top
    best_kl, best_i = np.inf, n
    for i in np.unique(np.linspace(levels, n, candidates).astype(int)):
        sliced = hist[:i]
        p = sliced.copy()
        p[i - 1] += hist[i:].sum()  # the reference keeps the clipped mass in its last bin...
        nonzero = p > 0
        # ...the candidate does not: quantize the sliced histogram into ``levels`` groups and spread
        # each group's mass over its non-zero bins, so clipping costs KL (as in TensorRT / MXNet)
        starts = np.linspace(0, i, levels + 1).astype(int)[:-1]
        group = np.repeat(np.arange(levels), np.diff(np.append(starts, i)))
        mass = np.add.reduceat(sliced, starts)
        count = np.add.reduceat(nonzero.astype(np.float64), starts)
        q = np.where(nonzero, mass[group] / np.maximum(count[group], 1.0), 0.0)
        ps = p[nonzero] / p.sum()
        qs = np.maximum(q[nonzero] / max(q.sum(), 1e-12), 1e-12)
        kl = float(np.sum(ps * np.log(ps / qs)))
        if kl < best_kl:
            best_kl, best_i = kl, int(i)
    return float(top * best_i / n)


def ranges_from_stats(
    stats: ActivationStats, method: RangeMethod, percentile: float = DEFAULT_PERCENTILE, levels: int = 128
) -> dict[str, tuple[float, float]]:
    """(rmin, rmax) per tensor: the observed range clipped at the method's |x| threshold."""
    out: dict[str, tuple[float, float]] = {}
    for name, lo in stats.minimum.items():
        hi = stats.maximum[name]
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        hist = stats.hist.get(name)
        if method == "max" or hist is None:
            out[name] = (lo, hi)
            continue
        top = max(-lo, hi)
        one_sided = lo >= 0.0
        t = (
            percentile_threshold(hist, top, percentile)
            if method == "percentile"
            else entropy_threshold(hist, top, 255 if one_sided else levels)
        )
        out[name] = (max(lo, -t), min(hi, t))
    return out


def write_ort_calibration_cache(ranges: dict[str, tuple[float, float]], path: Path) -> None:
    """Our ranges in the JSON form ``quantize_static(calibration_cache_path=...)`` reads."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorData,
        TensorsData,
        save_tensors_data,
    )

    data = {
        name: TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
        for name, (lo, hi) in ranges.items()
    }
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)


def describe_calibrator(recipe: Int8Recipe) -> str:
    if recipe.target == "tensorrt":
        return f"ModelOpt's {recipe.calibration} calibrator"
    if recipe.target == "openvino":
        how = "min/max" if recipe.calibration == "max" else f"{recipe.percentile:g}th-percentile quantile"
        return f"NNCF post-training quantization ({how} activation ranges, performance preset)"
    if recipe.calibration == "max":
        return "tdmi activation ranges (min/max over all clips), given to onnxruntime as a calibration cache"
    pct = f"{recipe.percentile:g}th percentile of |x|"
    how = pct if recipe.calibration == "percentile" else "KL divergence"
    return f"tdmi histograms ({HIST_BINS} bins of |x|, {how}), given to onnxruntime as a calibration cache"


# ------------------------------------------------------------------------------------------ quantize


def ort_quantize(
    src_path: Path,
    out_path: Path,
    ranges: dict[str, tuple[float, float]],
    recipe: Int8Recipe,
    exclude: Sequence[str],
) -> None:
    """QDQ graph for ONNX Runtime with exactly ``ranges`` (no calibration run of ORT's own)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    cache = out_path.with_suffix(".ranges.json")
    write_ort_calibration_cache(ranges, cache)
    act = QuantType.QUInt16 if recipe.activations == "int16" else QuantType.QUInt8
    try:
        quantize_static(
            str(src_path),
            str(out_path),
            None,
            quant_format=QuantFormat.QDQ,
            per_channel=recipe.per_channel,
            activation_type=act,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            op_types_to_quantize=list(recipe.op_types),
            calibration_cache_path=str(cache),
            extra_options={"UseQDQContribOps": recipe.activations == "int16"},
        )
    except Exception as e:  # onnxruntime.quantization raises plain exceptions
        raise ExportError(f"ONNX Runtime INT8 quantization failed: {type(e).__name__}: {e}") from e
    finally:
        cache.unlink(missing_ok=True)


def recipe_json(recipe: Int8Recipe) -> str:
    return json.dumps(recipe.to_dict(), sort_keys=True)


def check_op_types(op_types: Sequence[str], target: str | None = None) -> None:
    """The one check of op types to quantize: every name an ONNX op; ORT needs at least one."""
    if not op_types and target == "onnxruntime":
        raise ExportError("an ONNX Runtime INT8 recipe needs op types to quantize (e.g. Conv)")
    unknown = [t for t in op_types if not onnx.defs.has(t)]
    if unknown:
        raise ExportError(f"unknown ONNX op types to quantize: {', '.join(unknown)} (e.g. Conv,Add)")
    if target == "openvino":
        missing = [t for t in op_types if t not in OV_OP_TYPES]
        if missing:
            raise ExportError(
                f"NNCF cannot be limited to op type(s) {', '.join(missing)} for OpenVINO: choose from "
                f"{', '.join(OV_OP_TYPES)} (or 'all' for NNCF's own set)"
            )


def ov_ignored_types(op_types: Sequence[str]) -> list[str]:
    """OpenVINO op types NNCF must leave alone so only ``op_types`` (ONNX names) are quantized."""
    if not op_types:
        return []
    keep = {ov for t in op_types for ov in OV_OP_TYPES[t]}
    return sorted({ov for group in OV_OP_TYPES.values() for ov in group} - keep)


def parse_op_types(text: str | None) -> tuple[str, ...] | None:
    """``--op-types``: None or "" -> None (the target's default); "all" -> () (ModelOpt's own set)."""
    if text is None or not text.strip():
        return None
    if text.strip().lower() == "all":
        return ()
    ops = tuple(t.strip() for t in re.split(r"[,\s]+", text) if t.strip())
    if not ops:
        raise ExportError(f"no op type in {text!r}: give names like Conv,Add, or 'all'")
    return ops
