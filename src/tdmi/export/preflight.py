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
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from tdmi.artifacts.sidecar import INPUT_NAME, BatchProfile
from tdmi.errors import ConfigError, ExportError
from tdmi.export.preflight_nodes import (
    DEFAULT_DOMAINS,
    check_deform_conv,
    check_grid_sample,
    check_plugin_nodes,
    check_qdq,
    node_label,
    opset_of,
)
from tdmi.plugins.temporal_diff import SPEC
from tdmi.versions import version_tuple

# DeformConv (opset 19) is in every TDMI graph; the export contract's default opset is 19.
MIN_OPSET = 19
DEFAULT_TRT_VERSION = "11"

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
    release_data = data["targets"][key]
    ops = {name: dict(entry) for name, entry in data["ops"][release_data["base"]].items()}
    for name in release_data.get("remove", []):
        ops.pop(name, None)
    ops.update(release_data.get("add", {}))
    max_opset = int(release_data["max_opset"])
    for release, opset in release_data.get("max_opset_from", {}).items():
        if (major, minor) >= version_tuple(release)[:2]:
            max_opset = max(max_opset, int(opset))
    return OpTable(key, ops, int(release_data["min_opset"]), max_opset, release_data["label"])


# -- graph helpers ---------------------------------------------------------------------------------


def _constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs: what TensorRT treats as build-time constants."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
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


# -- the checks ------------------------------------------------------------------------------------


def _check_opset(model: onnx.ModelProto, table: OpTable, report: PreflightReport) -> None:
    opset = opset_of(model, DEFAULT_DOMAINS)
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
        label = node_label(node, i)
        if node.domain == SPEC.domain or node.op_type == SPEC.op_type:
            continue  # checked by check_plugin_nodes
        if node.domain not in DEFAULT_DOMAINS:
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
            continue  # check_deform_conv says what to do about it
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
    check_deform_conv(model, types, producers, consumers, report, rtx=rtx)
    check_grid_sample(model, types, rtx, report)
    check_qdq(model, consts, types, consumers, report)
    check_plugin_nodes(model, config, types, producers, report)
    _check_io(model, config, profile, report)
    return report


def op_types(model: onnx.ModelProto) -> Sequence[tuple[str, str]]:
    """Distinct (domain, op_type) pairs, for reports."""
    return sorted({(n.domain, n.op_type) for n in model.graph.node})
