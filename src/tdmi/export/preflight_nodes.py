"""Pre-flight rules for the nodes TensorRT treats specially: DeformConv (its plugin), GridSample (the
decomposed DCN), Q/DQ pairs (strongly typed INT8) and the ``tdmi::TemporalDiff`` plugin node.

Kept apart from :mod:`tdmi.export.preflight` (report, operator table, graph-wide checks) because each
rule here knows one op's contract with TensorRT; ``check_onnx`` runs them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from tdmi.plugins.temporal_diff import SPEC

if TYPE_CHECKING:
    from tdmi.export.preflight import PreflightReport

DEFAULT_DOMAINS = ("", "ai.onnx")
_FLOAT_TYPES = {"FP32", "FP16"}
# Ops whose weight input (index 1) is per-channel quantized along this axis by TensorRT's convention.
_WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}
_QUANTIZABLE = {"Conv", "ConvTranspose", "Gemm", "MatMul"}

Producers = dict[str, onnx.NodeProto]
Consumers = dict[str, list[onnx.NodeProto]]


def node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index}:{node.op_type}"


def opset_of(model: onnx.ModelProto, domains: Iterable[str]) -> int | None:
    for imp in model.opset_import:
        if imp.domain in domains:
            return int(imp.version)
    return None


def check_grid_sample(
    model: onnx.ModelProto, types: dict[str, str], rtx: bool, report: PreflightReport
) -> None:
    """GridSample (the decomposed DCN) must read input and grid in one type in a strongly typed net."""
    for i, node in enumerate(model.graph.node):
        if node.op_type != "GridSample" or node.domain not in DEFAULT_DOMAINS or len(node.input) < 2:
            continue
        tx, tg = types.get(node.input[0]), types.get(node.input[1])
        if tx and tg and tx != tg:
            report.add(
                "error" if rtx else "warning",
                "gridsample-types",
                f"input is {tx} but grid is {tg}: TensorRT{'-RTX' if rtx else ''} needs one type for both",
                node_label(node, i),
                node.op_type,
            )


def check_deform_conv(
    model: onnx.ModelProto,
    types: dict[str, str],
    producers: Producers,
    consumers: Consumers,
    report: PreflightReport,
    rtx: bool = False,
) -> None:
    """Every ONNX DeformConv against TensorRT's DeformConv plugin (TensorRT-RTX has none)."""
    for i, node in enumerate(model.graph.node):
        if node.op_type != "DeformConv" or node.domain not in DEFAULT_DOMAINS:
            continue
        label = node_label(node, i)
        if rtx:
            report.add(
                "error",
                "deformconv-rtx",
                "TensorRT-RTX ships no plugin library, so it cannot build ONNX DeformConv: build with "
                "--deform-conv decomposed (or export with `tdmi-export onnx --deform-conv decomposed`)",
                label,
                node.op_type,
            )
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        _deform_conv_geometry(attrs, label, report)
        _deform_conv_types(node, types, label, report)
        _deform_conv_dequantized(node, producers, consumers, label, report)
        for key in ("group", "offset_group"):
            if key in attrs and int(attrs[key]) < 1:
                report.add(
                    "error", "deformconv-groups", f"{key}={attrs[key]} must be >= 1", label, node.op_type
                )


def _deform_conv_geometry(attrs: dict[str, Any], label: str, report: PreflightReport) -> None:
    """Pads and kernel rank: the plugin takes symmetric pads and a 1-D or 2-D kernel only."""
    pads = list(attrs.get("pads", []))
    if pads:
        half = len(pads) // 2
        if pads[:half] != pads[half:]:
            report.add(
                "error",
                "deformconv-pads",
                f"asymmetric pads {pads}: TensorRT's DeformConv needs equal begin/end pads per spatial axis",
                label,
                "DeformConv",
            )
    kernel = attrs.get("kernel_shape")
    if kernel is not None and len(kernel) not in (1, 2):
        report.add(
            "error",
            "deformconv-rank",
            f"{len(kernel)}D DeformConv: TensorRT supports 1D or 2D only",
            label,
            "DeformConv",
        )


def _deform_conv_types(
    node: onnx.NodeProto, types: dict[str, str], label: str, report: PreflightReport
) -> None:
    """One float type for all inputs: a strongly typed network does not cast them for the plugin."""
    in_types = {n: types.get(n) for n in node.input if n}
    known = {t for t in in_types.values() if t}
    if len(known) > 1:
        listing = ", ".join(f"{n}={t}" for n, t in in_types.items() if t)
        report.add(
            "error",
            "deformconv-mixed-types",
            f"inputs (X, W, offset, B, mask) must share one type, got {listing}",
            label,
            node.op_type,
        )
    bad = sorted(t for t in known if t not in _FLOAT_TYPES)
    if bad:
        report.add(
            "error",
            "deformconv-type",
            f"DeformConv runs in FP32/FP16 only, got {', '.join(bad)} input(s)",
            label,
            node.op_type,
        )


def _deform_conv_dequantized(
    node: onnx.NodeProto, producers: Producers, consumers: Consumers, label: str, report: PreflightReport
) -> None:
    """A Q/DQ pair that only DeformConv reads buys nothing: the plugin has no INT8 kernel."""
    for name in (n for n in node.input if n):
        prod = producers.get(name)
        if prod is None or prod.op_type != "DequantizeLinear":
            continue
        # A DQ shared with a Conv is there for the Conv; DeformConv just reads its float output.
        others = [c for c in consumers.get(name, []) if c is not node]
        if any(c.op_type in _QUANTIZABLE for c in others):
            continue
        report.add(
            "warning",
            "qdq-placement",
            f"input {name} is dequantized only for DeformConv, which runs in FP32/FP16 (no INT8 "
            "kernel): the Q/DQ pair costs time for nothing; exclude DeformConv from quantization",
            label,
            node.op_type,
        )


def check_qdq(
    model: onnx.ModelProto,
    consts: dict[str, np.ndarray],
    types: dict[str, str],
    consumers: dict[str, list[onnx.NodeProto]],
    report: PreflightReport,
) -> None:
    for i, node in enumerate(model.graph.node):
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or node.domain not in DEFAULT_DOMAINS:
            continue
        label = node_label(node, i)
        scale = node.input[1] if len(node.input) > 1 else ""
        if scale not in consts:
            report.add(
                "error",
                "qdq-scale",
                f"scale {scale or '(missing)'} must be a build-time constant",
                label,
                node.op_type,
            )
        zp = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        if zp:
            zp_type = types.get(zp)
            if zp_type and zp_type != "INT8" and zp_type not in ("FP8", "INT4", "FP4"):
                report.add(
                    "error",
                    "qdq-zero-point",
                    f"zero point type {zp_type}: TensorRT quantizes to signed INT8",
                    label,
                    node.op_type,
                )
            if zp in consts and np.any(consts[zp] != 0):
                report.add(
                    "error",
                    "qdq-zero-point",
                    "zero point must be 0 (TensorRT quantization is symmetric)",
                    label,
                    node.op_type,
                )
            elif zp not in consts:
                report.add(
                    "error",
                    "qdq-zero-point",
                    f"zero point {zp} must be a build-time constant 0",
                    label,
                    node.op_type,
                )
        if node.op_type != "DequantizeLinear" or node.input[0] not in consts:
            continue
        # A weight DQ: TensorRT expects per-channel scales along the output-channel axis.
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for consumer in consumers.get(node.output[0], []):
            axis_expected = _WEIGHT_AXIS.get(consumer.op_type)
            if axis_expected is None or len(consumer.input) < 2 or consumer.input[1] != node.output[0]:
                continue
            scale_arr = consts.get(scale)
            if scale_arr is not None and scale_arr.size == 1:
                report.add(
                    "warning",
                    "qdq-per-tensor-weight",
                    f"weights of {consumer.name or consumer.op_type} are quantized per tensor; per-channel "
                    f"(axis {axis_expected}) keeps accuracy",
                    label,
                    node.op_type,
                )
            elif int(attrs.get("axis", 1)) != axis_expected:
                report.add(
                    "error",
                    "qdq-weight-axis",
                    f"weights of {consumer.name or consumer.op_type} are quantized along axis "
                    f"{attrs.get('axis', 1)}, "
                    f"TensorRT needs the output-channel axis {axis_expected}",
                    label,
                    node.op_type,
                )


def check_plugin_nodes(
    model: onnx.ModelProto,
    config: Any,
    types: dict[str, str],
    producers: Producers,
    report: PreflightReport,
) -> None:
    """The TemporalDiff plugin nodes: opset import, attributes, num_frames vs the config, I/O types."""
    nodes = [
        (i, n) for i, n in enumerate(model.graph.node) if n.op_type == SPEC.op_type or n.domain == SPEC.domain
    ]
    if not nodes:
        return
    _check_plugin_opset(model, report)
    for i, node in nodes:
        label = node_label(node, i)
        if node.domain != SPEC.domain or node.op_type != SPEC.op_type:
            report.add(
                "error",
                "plugin-op",
                f"{node.domain or 'ai.onnx'}::{node.op_type} is not a registered plugin op "
                f"(expected {SPEC.domain}::{SPEC.op_type})",
                label,
                node.op_type,
            )
            continue
        attrs = {a.name: a for a in node.attribute}
        _check_plugin_attrs(attrs, label, report)
        _check_plugin_num_frames(attrs.get(SPEC.num_frames_attr), config, label, report)
        _check_plugin_io(node, types, producers, label, report)


def _check_plugin_opset(model: onnx.ModelProto, report: PreflightReport) -> None:
    """TensorRT finds the plugin through the custom domain's opset import, at the plugin's version."""
    domain_version = opset_of(model, [SPEC.domain])
    if domain_version is None:
        report.add(
            "error",
            "plugin-opset",
            f"the graph uses {SPEC.domain} ops but does not import the "
            f"'{SPEC.domain}' opset (version {SPEC.domain_version})",
        )
    elif domain_version != SPEC.domain_version:
        report.add(
            "error",
            "plugin-opset",
            f"'{SPEC.domain}' opset version {domain_version}, expected {SPEC.domain_version}",
        )


def _plugin_string_attrs() -> dict[str, str]:
    """The optional STRING attributes of a plugin node (name -> required value), per the SPEC."""
    out = {}
    for field_name, value in (
        ("plugin_namespace_attr", SPEC.domain),
        ("plugin_version_attr", SPEC.plugin_version),
    ):
        attr = getattr(SPEC, field_name, None)
        if attr:
            out[attr] = value
    return out


def _check_plugin_attrs(attrs: dict[str, onnx.AttributeProto], label: str, report: PreflightReport) -> None:
    """The attribute set the plugin's creator reads: required INTs, optional fixed strings, aot=1."""
    op = SPEC.op_type
    required = {SPEC.num_frames_attr: onnx.AttributeProto.INT, SPEC.aot_attr: onnx.AttributeProto.INT}
    optional = _plugin_string_attrs()
    for missing in sorted(set(required) - set(attrs)):
        report.add("error", "plugin-attr", f"TemporalDiff node has no '{missing}' attribute", label, op)
    for extra in sorted(set(attrs) - set(required) - set(optional)):
        report.add(
            "error",
            "plugin-attr",
            f"unknown TemporalDiff attribute '{extra}' (the plugin node takes "
            f"{', '.join([*required, *optional])})",
            label,
            op,
        )
    for name, kind in required.items():
        if name in attrs and attrs[name].type != kind:
            report.add("error", "plugin-attr", f"attribute '{name}' must be an INT", label, op)
    for name, value in optional.items():
        a = attrs.get(name)
        if a is None:
            continue
        got = a.s.decode() if a.type == onnx.AttributeProto.STRING else None
        if got != value:
            report.add(
                "error",
                "plugin-attr",
                f"attribute '{name}' must be the string {value!r}, got "
                f"{got if got is not None else onnx.AttributeProto.AttributeType.Name(a.type)!r}",
                label,
                op,
            )
    aot = attrs.get(SPEC.aot_attr)
    if aot is not None and aot.type == onnx.AttributeProto.INT and aot.i != 1:
        report.add(
            "error",
            "plugin-attr",
            f"'{SPEC.aot_attr}'={aot.i}: must be 1 so TensorRT embeds the AOT kernel",
            label,
            op,
        )


def _check_plugin_num_frames(
    nf: onnx.AttributeProto | None, config: Any, label: str, report: PreflightReport
) -> None:
    """num_frames is baked into the kernel launch: it must match the clip length the model takes."""
    if nf is None or nf.type != onnx.AttributeProto.INT:
        return
    op = SPEC.op_type
    if nf.i < 2:
        report.add("error", "plugin-attr", f"num_frames={nf.i} must be >= 2", label, op)
    elif config is not None and nf.i != config.num_frames:
        report.add(
            "error",
            "plugin-num-frames",
            f"num_frames={nf.i} contradicts the model config in the metadata "
            f"(num_frames={config.num_frames})",
            label,
            op,
        )
    elif config is None:
        report.add(
            "warning",
            "plugin-num-frames",
            "no model config in the ONNX metadata: num_frames unchecked",
            label,
            op,
        )


def _check_plugin_io(
    node: onnx.NodeProto, types: dict[str, str], producers: Producers, label: str, report: PreflightReport
) -> None:
    """One float input, one output: the plugin has FP32/FP16 kernels only, so no INT8 may reach it."""
    if len([n for n in node.input if n]) != 1 or len(node.output) != 1:
        report.add(
            "error",
            "plugin-io",
            f"TemporalDiff takes 1 input and gives 1 output, got {len(node.input)} and {len(node.output)}",
            label,
            node.op_type,
        )
    for name in node.input:
        t = types.get(name)
        if t and t not in _FLOAT_TYPES:
            report.add(
                "error",
                "plugin-type",
                f"TemporalDiff input {name} is {t}; the plugin takes FP32/FP16",
                label,
                node.op_type,
            )
        prod = producers.get(name)
        if prod is not None and prod.op_type == "QuantizeLinear":
            report.add(
                "error",
                "qdq-placement",
                f"TemporalDiff is fed INT8 by QuantizeLinear {prod.name}",
                label,
                node.op_type,
            )
