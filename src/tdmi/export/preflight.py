"""Pre-flight check of an ONNX graph against what TensorRT's ONNX parser will accept, without TensorRT.

Building an engine takes minutes on a GPU machine; an unsupported operator, a DeformConv that
TensorRT's plugin cannot take, a stray INT8 tensor or a profile that does not fit the graph
should fail here, on any machine, in a second, naming the node.
The operator table is repo data (``data/trt_onnx_ops.json``) transcribed from onnx-tensorrt's
``docs/operators.md``; it says which release it comes from.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from tdmi.artifacts.sidecar import INPUT_NAME, BatchProfile
from tdmi.errors import ConfigError, ExportError
from tdmi.plugins.temporal_diff import SPEC
from tdmi.versions import version_tuple

# DeformConv (opset 19) is in every TDMI graph; the export contract's default opset is 19.
MIN_OPSET = 19
DEFAULT_TRT_VERSION = "11"
_DEFAULT_DOMAINS = ("", "ai.onnx")
_FLOAT_TYPES = {"FP32", "FP16"}
_QUANTIZED = {"INT8", "UINT8", "INT4", "UINT4", "FP8", "FP4"}
# Ops whose weight input (index 1) is per-channel quantized along this axis by TensorRT's convention.
_WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}
_QUANTIZABLE = {"Conv", "ConvTranspose", "Gemm", "MatMul"}

_ONNX_TO_TRT_TYPE = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.DOUBLE: "DOUBLE",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.INT4: "INT4",
    onnx.TensorProto.UINT4: "UINT4",
    onnx.TensorProto.FLOAT8E4M3FN: "FP8",
    onnx.TensorProto.FLOAT4E2M1: "FP4",
}


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning"
    code: str  # stable identifier tests and scripts can match on
    message: str
    node: str = ""
    op_type: str = ""


@dataclass
class PreflightReport:
    trt_version: str
    ops_source: str
    findings: list[Finding] = field(default_factory=list)
    model_path: str = ""

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def add(self, severity: str, code: str, message: str, node: str = "", op_type: str = "") -> None:
        self.findings.append(Finding(severity, code, message, node, op_type))

    def summary(self) -> str:
        """One line for an exception: the count and the first errors."""
        errs = self.errors
        head = "; ".join(f"{f.node + ': ' if f.node else ''}{f.message}" for f in errs[:3])
        more = f" (+{len(errs) - 3} more)" if len(errs) > 3 else ""
        return f"pre-flight check for TensorRT {self.trt_version} found {len(errs)} error(s): {head}{more}"

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ExportError(self.summary() + " (run `tdmi-build-engine check` for the full table)")

    def to_table(self) -> Any:
        from rich.table import Table

        counts = f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        title = f"TensorRT {self.trt_version} pre-flight: {counts}"
        table = Table(title=title, caption=f"operator list: {self.ops_source}", show_lines=False)
        table.add_column("severity")
        table.add_column("check")
        table.add_column("node")
        table.add_column("op")
        table.add_column("finding", overflow="fold")
        for f in sorted(self.findings, key=lambda f: (f.severity != "error", f.code)):
            style = "bold red" if f.severity == "error" else "yellow"
            table.add_row(f"[{style}]{f.severity}[/]", f.code, f.node or "-", f.op_type or "-", f.message)
        return table


# -- operator table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpTable:
    target: str
    ops: dict[str, dict[str, Any]]
    min_opset: int
    max_opset: int
    source: str


@functools.lru_cache(maxsize=1)
def _ops_data() -> dict[str, Any]:
    text = resources.files("tdmi.export").joinpath("data/trt_onnx_ops.json").read_text()
    return json.loads(text)


def op_table(trt_version: str = DEFAULT_TRT_VERSION, target: str = "tensorrt") -> OpTable:
    """The parser's operator list for a TensorRT release (10.9 or later) or for TensorRT-RTX 1.x."""
    data = _ops_data()
    ver = version_tuple(trt_version, "TensorRT")
    major, minor = ver[0], ver[1] if len(ver) > 1 else 0
    if target == "tensorrt-rtx":
        key = "rtx-1"
    elif major == 11:
        key = "11"
    elif major == 10 and minor >= 15:
        key = "10.15"
    elif major == 10 and minor >= 9:
        key = "10.9"
    else:
        raise ConfigError(
            f"TensorRT {trt_version} is not a supported target: this toolkit needs TensorRT 10.9 or later "
            "(AOT Python plugins); 11.x is the main target"
        )
    target = data["targets"][key]
    ops = {name: dict(entry) for name, entry in data["ops"][target["base"]].items()}
    for name in target.get("remove", []):
        ops.pop(name, None)
    ops.update(target.get("add", {}))
    max_opset = int(target["max_opset"])
    for release, opset in target.get("max_opset_from", {}).items():
        if (major, minor) >= version_tuple(release)[:2]:
            max_opset = max(max_opset, int(opset))
    return OpTable(key, ops, int(target["min_opset"]), max_opset, target["label"])


# -- graph helpers ---------------------------------------------------------------------------------


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index}:{node.op_type}"


def _constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs: what TensorRT treats as build-time constants."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _tensor_types(model: onnx.ModelProto) -> dict[str, str]:
    """Element type per tensor name, from shape inference where it can run (custom ops stop it)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # inference is best effort: declared types below still count
        inferred = model
    types: dict[str, str] = {}
    g = inferred.graph
    for vi in [*g.input, *g.output, *g.value_info]:
        t = vi.type.tensor_type
        if t.elem_type:
            types[vi.name] = _ONNX_TO_TRT_TYPE.get(t.elem_type, onnx.TensorProto.DataType.Name(t.elem_type))
    for init in model.graph.initializer:
        types[init.name] = _ONNX_TO_TRT_TYPE.get(
            init.data_type, onnx.TensorProto.DataType.Name(init.data_type)
        )
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = _ONNX_TO_TRT_TYPE.get(attr.t.data_type, "?")
        if node.op_type == "QuantizeLinear" and node.output:
            # The output type is the zero point's type, INT8 by default.
            zp = node.input[2] if len(node.input) > 2 else ""
            types.setdefault(node.output[0], types.get(zp, "INT8") if zp else "INT8")
    return types


def config_from_metadata(model: onnx.ModelProto) -> Any:
    """The ``TDMIConfig`` embedded by ``tdmi-export`` in the ONNX metadata, or None if absent/damaged."""
    from tdmi.export.metadata import read_metadata

    try:
        return read_metadata(model)["config"]
    except ExportError:
        return None


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    out: list[int | str] = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return out


def _opset(model: onnx.ModelProto, domains: Iterable[str]) -> int | None:
    for imp in model.opset_import:
        if imp.domain in domains:
            return int(imp.version)
    return None


# -- the checks ------------------------------------------------------------------------------------


def _check_opset(model: onnx.ModelProto, table: OpTable, report: PreflightReport) -> None:
    opset = _opset(model, _DEFAULT_DOMAINS)
    if opset is None:
        report.add("error", "opset", "the model imports no default ONNX opset")
        return
    lo = max(MIN_OPSET, table.min_opset)
    if opset < lo:
        report.add(
            "error", "opset", f"opset {opset} is below the minimum {lo} (DeformConv needs 19): re-export"
        )
    if opset > table.max_opset:
        report.add(
            "error",
            "opset",
            f"opset {opset} is above the maximum {table.max_opset} TensorRT {report.trt_version}'s parser "
            "reads: "
            "re-export with a lower --opset",
        )


def _check_ops(
    model: onnx.ModelProto, table: OpTable, types: dict[str, str], report: PreflightReport
) -> None:
    for i, node in enumerate(model.graph.node):
        label = _node_label(node, i)
        if node.domain == SPEC.domain or node.op_type == SPEC.op_type:
            continue  # checked by _check_plugin_nodes
        if node.domain not in _DEFAULT_DOMAINS:
            report.add(
                "error",
                "custom-op",
                f"custom op {node.domain}::{node.op_type} has no TensorRT implementation in this toolkit",
                label,
                node.op_type,
            )
            continue
        entry = table.ops.get(node.op_type)
        if node.op_type == "DeformConv" and table.target == "rtx-1":
            continue  # _check_deform_conv says what to do about it
        if entry is None:
            report.add(
                "error",
                "unsupported-op",
                f"{node.op_type} is not in TensorRT {report.trt_version}'s ONNX operator list",
                label,
                node.op_type,
            )
            continue
        if not entry.get("supported", False):
            report.add(
                "error",
                "unsupported-op",
                f"{node.op_type} is not supported by TensorRT {report.trt_version}'s ONNX parser",
                label,
                node.op_type,
            )
            continue
        allowed = entry.get("types")
        first = types.get(node.input[0]) if node.input and node.input[0] else None
        if (
            allowed
            and first
            and first not in allowed
            and node.op_type not in ("QuantizeLinear", "DequantizeLinear")
        ):
            report.add(
                "warning",
                "op-type",
                f"{node.op_type} on {first} input; the parser lists {', '.join(allowed)}",
                label,
                node.op_type,
            )


def _check_grid_sample(
    model: onnx.ModelProto, types: dict[str, str], rtx: bool, report: PreflightReport
) -> None:
    """GridSample (the decomposed DCN) must read input and grid in one type in a strongly typed net."""
    for i, node in enumerate(model.graph.node):
        if node.op_type != "GridSample" or node.domain not in _DEFAULT_DOMAINS or len(node.input) < 2:
            continue
        tx, tg = types.get(node.input[0]), types.get(node.input[1])
        if tx and tg and tx != tg:
            report.add(
                "error" if rtx else "warning",
                "gridsample-types",
                f"input is {tx} but grid is {tg}: TensorRT{'-RTX' if rtx else ''} needs one type for both",
                _node_label(node, i),
                node.op_type,
            )


def _check_deform_conv(
    model: onnx.ModelProto,
    types: dict[str, str],
    producers: dict[str, onnx.NodeProto],
    consumers: dict[str, list[onnx.NodeProto]],
    report: PreflightReport,
    rtx: bool = False,
) -> None:
    for i, node in enumerate(model.graph.node):
        if node.op_type != "DeformConv" or node.domain not in _DEFAULT_DOMAINS:
            continue
        label = _node_label(node, i)
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
        pads = list(attrs.get("pads", []))
        if pads:
            half = len(pads) // 2
            if pads[:half] != pads[half:]:
                report.add(
                    "error",
                    "deformconv-pads",
                    f"asymmetric pads {pads}: TensorRT's DeformConv needs equal begin/end pads "
                    "per spatial axis",
                    label,
                    node.op_type,
                )
        kernel = attrs.get("kernel_shape")
        if kernel is not None and len(kernel) not in (1, 2):
            report.add(
                "error",
                "deformconv-rank",
                f"{len(kernel)}D DeformConv: TensorRT supports 1D or 2D only",
                label,
                node.op_type,
            )
        named = [n for n in node.input if n]
        in_types = {n: types.get(n) for n in named}
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
        for name in named:
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
        for key in ("group", "offset_group"):
            if key in attrs and int(attrs[key]) < 1:
                report.add(
                    "error", "deformconv-groups", f"{key}={attrs[key]} must be >= 1", label, node.op_type
                )


def _check_qdq(
    model: onnx.ModelProto,
    consts: dict[str, np.ndarray],
    types: dict[str, str],
    consumers: dict[str, list[onnx.NodeProto]],
    report: PreflightReport,
) -> None:
    for i, node in enumerate(model.graph.node):
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or node.domain not in _DEFAULT_DOMAINS:
            continue
        label = _node_label(node, i)
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


def _check_plugin_nodes(
    model: onnx.ModelProto,
    config: Any,
    types: dict[str, str],
    producers: dict[str, onnx.NodeProto],
    report: PreflightReport,
) -> None:
    nodes = [
        (i, n) for i, n in enumerate(model.graph.node) if n.op_type == SPEC.op_type or n.domain == SPEC.domain
    ]
    if not nodes:
        return
    domain_version = _opset(model, [SPEC.domain])
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
    for i, node in nodes:
        label = _node_label(node, i)
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
        required = {SPEC.num_frames_attr: onnx.AttributeProto.INT, SPEC.aot_attr: onnx.AttributeProto.INT}
        optional = _plugin_string_attrs()
        for missing in sorted(set(required) - set(attrs)):
            report.add(
                "error", "plugin-attr", f"TemporalDiff node has no '{missing}' attribute", label, node.op_type
            )
        for extra in sorted(set(attrs) - set(required) - set(optional)):
            report.add(
                "error",
                "plugin-attr",
                f"unknown TemporalDiff attribute '{extra}' (the plugin node takes "
                f"{', '.join([*required, *optional])})",
                label,
                node.op_type,
            )
        for name, kind in required.items():
            if name in attrs and attrs[name].type != kind:
                report.add("error", "plugin-attr", f"attribute '{name}' must be an INT", label, node.op_type)
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
                    node.op_type,
                )
        aot = attrs.get(SPEC.aot_attr)
        if aot is not None and aot.type == onnx.AttributeProto.INT and aot.i != 1:
            report.add(
                "error",
                "plugin-attr",
                f"'{SPEC.aot_attr}'={aot.i}: must be 1 so TensorRT embeds the AOT kernel",
                label,
                node.op_type,
            )
        nf = attrs.get(SPEC.num_frames_attr)
        if nf is not None and nf.type == onnx.AttributeProto.INT:
            if nf.i < 2:
                report.add("error", "plugin-attr", f"num_frames={nf.i} must be >= 2", label, node.op_type)
            elif config is not None and nf.i != config.num_frames:
                report.add(
                    "error",
                    "plugin-num-frames",
                    f"num_frames={nf.i} contradicts the model config in the metadata "
                    f"(num_frames={config.num_frames})",
                    label,
                    node.op_type,
                )
            elif config is None:
                report.add(
                    "warning",
                    "plugin-num-frames",
                    "no model config in the ONNX metadata: num_frames unchecked",
                    label,
                    node.op_type,
                )
        if len([n for n in node.input if n]) != 1 or len(node.output) != 1:
            report.add(
                "error",
                "plugin-io",
                f"TemporalDiff takes 1 input and gives 1 output, got "
                f"{len(node.input)} and {len(node.output)}",
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


def _check_io(
    model: onnx.ModelProto, config: Any, profile: BatchProfile | None, report: PreflightReport
) -> None:
    initializers = {i.name for i in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    names = [vi.name for vi in inputs]
    if INPUT_NAME not in names:
        report.add(
            "error", "io", f"graph input '{INPUT_NAME}' not found (inputs: {', '.join(names) or 'none'})"
        )
        return
    if len(inputs) != 1:
        report.add("error", "io", f"expected one graph input '{INPUT_NAME}', got {', '.join(names)}")
    vi = next(v for v in inputs if v.name == INPUT_NAME)
    dims = _dims(vi)
    if len(dims) != 5:
        report.add("error", "io", f"'{INPUT_NAME}' must be [B, T, 3, H, W], got rank {len(dims)} {dims}")
        return
    for axis, (dim, what) in enumerate(zip(dims[1:], ("T", "channels", "H", "W"), strict=True), start=1):
        if not isinstance(dim, int) or dim <= 0:
            report.add(
                "error",
                "dynamic-dim",
                f"'{INPUT_NAME}' dimension {axis} ({what}) is dynamic ({dim}); the engine profile only "
                "covers the "
                "batch: export with a static clip shape",
            )
    if config is not None:
        want = (config.num_frames, 3, *config.input_size)
        got = tuple(dims[1:])
        if all(isinstance(d, int) for d in got) and got != want:
            report.add(
                "error",
                "io",
                f"'{INPUT_NAME}' is [B, {', '.join(map(str, got))}] but the model config says "
                f"[B, {', '.join(map(str, want))}]",
            )
    batch = dims[0]
    static = isinstance(batch, int) and batch > 0
    if static and profile is not None and not (profile.min == profile.max == batch):
        report.add(
            "error",
            "profile",
            f"the ONNX batch is static ({batch}) but the profile is {profile}: use "
            f"--batch {batch}:{batch}:{batch} "
            "or export with --batch dynamic",
        )


def check_onnx(
    model_or_path: onnx.ModelProto | str | Path,
    trt_version: str = DEFAULT_TRT_VERSION,
    profile: BatchProfile | None = None,
    config: Any = None,
    target: str = "tensorrt",
) -> PreflightReport:
    """Every check that needs no GPU: ops, opset, DeformConv, Q/DQ, plugin nodes, I/O vs profile.

    ``target="tensorrt-rtx"`` checks against TensorRT-RTX 1.x (``trt_version`` is then ignored).
    """
    if target not in ("tensorrt", "tensorrt-rtx"):
        raise ConfigError(f"unknown target {target!r}: use tensorrt or tensorrt-rtx")
    rtx = target == "tensorrt-rtx"
    table = op_table(trt_version, target)
    if rtx:
        trt_version = "RTX 1.x"
    path = ""
    if isinstance(model_or_path, onnx.ModelProto):
        model = model_or_path
    else:
        path = str(model_or_path)
        if not Path(path).is_file():
            raise ExportError(f"ONNX file {path} not found")
        try:
            model = onnx.load(path)
        except Exception as e:
            raise ExportError(f"cannot read ONNX file {path}: {e}") from None
    report = PreflightReport(trt_version=str(trt_version), ops_source=table.source, model_path=path)
    if config is None:
        config = config_from_metadata(model)
    types = _tensor_types(model)
    consts = _constant_values(model)
    producers = {out: n for n in model.graph.node for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    _check_opset(model, table, report)
    _check_ops(model, table, types, report)
    _check_deform_conv(model, types, producers, consumers, report, rtx=rtx)
    _check_grid_sample(model, types, rtx, report)
    _check_qdq(model, consts, types, consumers, report)
    _check_plugin_nodes(model, config, types, producers, report)
    _check_io(model, config, profile, report)
    return report


def op_types(model: onnx.ModelProto) -> Sequence[tuple[str, str]]:
    """Distinct (domain, op_type) pairs, for reports."""
    return sorted({(n.domain, n.op_type) for n in model.graph.node})
