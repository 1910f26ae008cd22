"""Rewrite ONNX ``DeformConv`` nodes into standard ops (GridSample + Mul + grouped 1x1 Conv).

``tdmi-export onnx --deform-conv decomposed`` gets this form straight from PyTorch
(:func:`tdmi.model.dcn.deform_conv2d_decomposed`); this rewrite gives ``tdmi-build-engine`` the same
graph from an ONNX file that was exported with native ``DeformConv``, so no re-export is needed.
The arithmetic is the one documented in :mod:`tdmi.model.dcn`; the base sampling grid is computed
by the same function and stored as a constant. New nodes are named under the DeformConv's own
scope (``tde/stage2/dcn/...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tdmi.errors import ExportError

DCN_OP = "DeformConv"


def _static_chw(shapes: dict[str, list[int | None]], name: str, node: onnx.NodeProto) -> tuple[int, int, int]:
    """(C, H, W) of a 4-D tensor whose batch alone may be dynamic: the rewrite bakes them in."""
    dims = shapes.get(name)
    if dims is None or len(dims) != 4 or any(d is None for d in dims[1:]):
        raise ExportError(
            f"cannot lower {node.name or DCN_OP}: {name} needs a known [N, C, H, W] shape (only the "
            "batch may be dynamic); re-export with `tdmi-export onnx --deform-conv decomposed`"
        )
    c, h, w = (int(d or 0) for d in dims[1:])
    return c, h, w


def _shape_table(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    table: dict[str, list[int | None]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            table[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for init in model.graph.initializer:
        table[init.name] = list(init.dims)
    return table


def _float_type(model: onnx.ModelProto, name: str) -> int:
    for vi in [*model.graph.value_info, *model.graph.input]:
        if vi.name == name:
            return vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        if init.name == name:
            return init.data_type
    return TensorProto.FLOAT


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _record_form(model: onnx.ModelProto) -> None:
    """The config in the metadata says which DCN form the graph holds (when it carries one)."""
    from tdmi.export.metadata import read_metadata, write_metadata

    try:
        meta = read_metadata(model)
    except ExportError:
        return  # not a tdmi export: nothing to keep in step
    keep = {k: meta[k] for k in ("precision", "target", "fused", "batch", "extra")}
    write_metadata(model, meta["config"].replace(deform_conv="decomposed"), **keep)


@dataclass(frozen=True)
class _Geometry:
    """The numbers one DeformConv's attributes and static shapes fix, baked into its rewrite."""

    cin: int
    h: int
    wd: int
    ho: int
    wo: int
    cout: int
    cin_g: int
    kh: int
    kw: int
    group: int
    og: int
    pads: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]

    @property
    def k(self) -> int:
        return self.kh * self.kw


def _geometry(node: onnx.NodeProto, shapes: dict[str, list[int | None]]) -> _Geometry:
    """Refuses what the rewrite cannot express: dynamic spatial shapes, asymmetric pads, odd offsets."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    x, w, offset = node.input[0], node.input[1], node.input[2]
    cin, h, wd = _static_chw(shapes, x, node)
    off_c, ho, wo = _static_chw(shapes, offset, node)
    wshape = [int(d) for d in shapes.get(w) or [] if d is not None]
    if len(shapes.get(w) or []) != 4 or len(wshape) != 4:
        raise ExportError(f"cannot lower {node.name}: weight {w} has no static 4-D shape")
    cout, cin_g, kh, kw = wshape
    og = int(attrs.get("offset_group", 1))
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise ExportError(f"cannot lower {node.name}: asymmetric pads {pads}")
    if off_c != 2 * og * kh * kw:
        raise ExportError(
            f"cannot lower {node.name}: offset has {off_c} channels, expected {2 * og * kh * kw}"
        )
    strides, dilations = tuple(attrs.get("strides", [1, 1])), tuple(attrs.get("dilations", [1, 1]))
    return _Geometry(
        cin,
        h,
        wd,
        ho,
        wo,
        cout,
        cin_g,
        kh,
        kw,
        group=int(attrs.get("group", 1)),
        og=og,
        pads=(int(pads[0]), int(pads[1])),
        strides=(int(strides[0]), int(strides[1])),
        dilations=(int(dilations[0]), int(dilations[1])),
    )


class _Emitter:
    """Appends constants and nodes named under one DeformConv's scope (``.../lowered/...``)."""

    def __init__(self, out: onnx.ModelProto, nodes: list[onnx.NodeProto], prefix: str) -> None:
        self.out, self.nodes, self.prefix = out, nodes, prefix

    def const(self, name: str, value: np.ndarray) -> str:
        full = f"{self.prefix}/{name}"
        self.out.graph.initializer.append(numpy_helper.from_array(value, full))
        return full

    def add(self, op: str, inputs: list[str], name: str, **kw: Any) -> str:
        out_name = f"{self.prefix}/{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out_name], name=f"{self.prefix}/{name}", **kw))
        return out_name


def _lower_one(
    node: onnx.NodeProto, g: _Geometry, em: _Emitter, inferred: onnx.ModelProto, mode: str
) -> None:
    """One DeformConv as offsets -> sampling grid -> GridSample (-> mask) -> grouped 1x1 Conv."""
    from tdmi.model.dcn import sampling_base

    x, w, offset = node.input[0], node.input[1], node.input[2]
    bias = node.input[3] if len(node.input) > 3 and node.input[3] else None
    mask = node.input[4] if len(node.input) > 4 and node.input[4] else None
    k, ho, wo, h, wd = g.k, g.ho, g.wo, g.h, g.wd
    dtype = _float_type(inferred, x)
    off_dtype = _float_type(inferred, offset)
    np_dtype = helper.tensor_dtype_to_np_dtype(off_dtype)  # the grid is computed from the offsets
    base = (
        sampling_base((h, wd), (ho, wo), (g.kh, g.kw), g.strides, g.pads, g.dilations)
        .numpy()
        .astype(np_dtype)
    )
    scale = np.array([2.0 / wd, 2.0 / h], dtype=np_dtype)
    i64, add, const = np.int64, em.add, em.const
    off = add("Reshape", [offset, const("off_shape", np.array([-1, k, 2, ho, wo], i64))], "Reshape_off")
    off = add("Transpose", [off], "Transpose_off", perm=[0, 1, 3, 4, 2])
    off = add("Gather", [off, const("yx_to_xy", np.array([1, 0], i64))], "Gather_xy", axis=4)
    off = add("Mul", [off, const("scale", scale)], "Mul_scale")
    grid = add("Add", [off, const("base", base)], "Add_base")
    grid = add("Reshape", [grid, const("grid_shape", np.array([-1, k * ho, wo, 2], i64))], "Reshape_grid")
    if off_dtype != dtype:  # GridSample's input and grid must share a type (TensorRT-RTX insists)
        grid = add("Cast", [grid], "Cast_grid", to=dtype)
    xs = add("Reshape", [x, const("x_shape", np.array([-1, g.cin // g.og, h, wd], i64))], "Reshape_x")
    cols = add("GridSample", [xs, grid], "GridSample", mode=mode, padding_mode="zeros", align_corners=0)
    if mask is not None:
        m = add("Reshape", [mask, const("mask_shape", np.array([-1, 1, k * ho, wo], i64))], "Reshape_mask")
        if _float_type(inferred, mask) != dtype:
            m = add("Cast", [m], "Cast_mask", to=dtype)
        cols = add("Mul", [cols, m], "Mul_mask")
    cols = add("Reshape", [cols, const("cols_shape", np.array([-1, g.cin * k, ho, wo], i64))], "Reshape_cols")
    wr = add("Reshape", [w, const("w_shape", np.array([g.cout, g.cin_g * k, 1, 1], i64))], "Reshape_w")
    conv_inputs = [cols, wr] + ([bias] if bias else [])
    em.nodes.append(
        helper.make_node(
            "Conv",
            conv_inputs,
            list(node.output),
            name=f"{em.prefix}/Conv",
            group=g.group,
            kernel_shape=[1, 1],
        )
    )


def lower_deform_conv(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every ``DeformConv`` lowered; returns it and how many were lowered."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if not any(n.op_type == DCN_OP for n in out.graph.node):
        return out, 0
    shapes = _shape_table(out)
    mode = "linear" if _opset(out) >= 20 else "bilinear"
    inferred = onnx.shape_inference.infer_shapes(out)
    new_nodes: list[onnx.NodeProto] = []
    lowered = 0
    for node in out.graph.node:
        if node.op_type != DCN_OP or node.domain not in ("", "ai.onnx"):
            new_nodes.append(node)
            continue
        geometry = _geometry(node, shapes)
        prefix = node.name.rsplit("/", 1)[0] + "/lowered" if "/" in node.name else f"{node.name}/lowered"
        _lower_one(node, geometry, _Emitter(out, new_nodes, prefix), inferred, mode)
        lowered += 1
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    _record_form(out)
    try:
        onnx.checker.check_model(out)
    except onnx.checker.ValidationError as e:
        raise ExportError(
            f"DeformConv lowering produced an invalid graph: {str(e).splitlines()[0]}"
        ) from None
    return out, lowered
