"""Run exported graphs on the CPU, the fused ``tdmi::TemporalDiff`` op included.

ONNX Runtime has no kernel for our custom op and ``onnxruntime-extensions`` is not a dependency, so
at run time (never in the written file, which TensorRT must see with the bare plugin node) the
model gets a model-local ONNX function ``tdmi::TemporalDiff`` that ORT inlines. The function is a
second, independent implementation of ``tdmi.plugins.temporal_diff`` (one 5-D slice pair and one
Sub instead of the exporter's per-frame slices): the tests check it against the numpy reference.
A pure-Python path (``onnx.reference`` with an ``OpRun`` calling the numpy reference) is kept for
cross-checks on small graphs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh

from tdmi.artifacts.onnx_meta import INPUT_NAME
from tdmi.errors import DataError, ExportError
from tdmi.export.metadata import load_onnx_checked
from tdmi.plugins.ort import create_session
from tdmi.plugins.temporal_diff import SPEC, node_attributes, temporal_diff_reference

Engine = Literal["onnxruntime", "reference"]


def temporal_diff_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == SPEC.domain and n.op_type == SPEC.op_type]


def node_num_frames(node: onnx.NodeProto) -> int:
    for a in node.attribute:
        if a.name == SPEC.num_frames_attr:
            return int(a.i)
    raise ExportError(f"TemporalDiff node {node.name!r} has no {SPEC.num_frames_attr!r} attribute")


def temporal_diff_function(num_frames: int, opset: int = 19) -> onnx.FunctionProto:
    """``tdmi::TemporalDiff`` as an ONNX function specialised to ``num_frames`` (ORT inlines it)."""
    t = int(num_frames)
    if t < 2:
        raise ExportError(f"TemporalDiff needs num_frames >= 2, got {t}")

    def const(name: str, values: Sequence[int]) -> onnx.NodeProto:
        return oh.make_node(
            "Constant", [], [name], value=oh.make_tensor(name, TensorProto.INT64, [len(values)], values)
        )

    nodes = [
        oh.make_node("Shape", ["x"], ["shape"]),
        const("one", [1]),
        const("two", [2]),
        const("four", [4]),
        const("zero", [0]),
        const("t", [t]),
        const("t_minus_1", [t - 1]),
        const("lead5", [-1, t]),
        const("lead4", [0, -1]),
        oh.make_node("Slice", ["shape", "one", "four"], ["chw"]),
        oh.make_node("Slice", ["shape", "two", "four"], ["hw"]),
        oh.make_node("Concat", ["lead5", "chw"], ["shape5"], axis=0),
        oh.make_node("Reshape", ["x", "shape5"], ["x5"]),
        oh.make_node("Slice", ["x5", "one", "t", "one"], ["later"]),
        oh.make_node("Slice", ["x5", "zero", "t_minus_1", "one"], ["earlier"]),
        oh.make_node("Sub", ["later", "earlier"], ["d5"]),
        oh.make_node("Concat", ["lead4", "hw"], ["shape4"], axis=0),
        oh.make_node("Reshape", ["d5", "shape4"], ["y"]),
    ]
    attrs = sorted(node_attributes(t))
    return oh.make_function(
        SPEC.domain, SPEC.op_type, ["x"], ["y"], nodes, [oh.make_opsetid("", opset)], attributes=attrs
    )


def with_cpu_temporal_diff(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` that ONNX Runtime CPU can run (TemporalDiff as a local function)."""
    nodes = temporal_diff_nodes(model)
    if not nodes:
        return model
    frames = {node_num_frames(n) for n in nodes}
    if len(frames) != 1:
        raise ExportError(
            f"TemporalDiff nodes disagree on num_frames ({sorted(frames)}): the graph is inconsistent"
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.functions[:]
    opset = max((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), default=19)
    out.functions.append(temporal_diff_function(frames.pop(), int(opset)))
    if not any(o.domain == SPEC.domain for o in out.opset_import):
        out.opset_import.append(oh.make_opsetid(SPEC.domain, SPEC.domain_version))
    return out


def _as_model(path_or_model: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model
    return load_onnx_checked(Path(path_or_model))


def static_batch(model: onnx.ModelProto) -> int | None:
    """The input's batch size when it is fixed, ``None`` when it is symbolic."""
    for vi in model.graph.input:
        if vi.name == INPUT_NAME:
            d = vi.type.tensor_type.shape.dim[0]
            return int(d.dim_value) if d.HasField("dim_value") else None
    raise ExportError(f"the graph has no input named {INPUT_NAME!r}: not a tdmi export")


def _chunks(clips: np.ndarray, batch: int | None) -> list[np.ndarray]:
    if batch is None or batch == clips.shape[0]:
        return [clips]
    if clips.shape[0] % batch:
        raise DataError(
            f"{clips.shape[0]} clips cannot be split into batches of {batch} (the graph's fixed batch): "
            "pass a multiple, or export with --batch dynamic"
        )
    return [clips[i : i + batch] for i in range(0, clips.shape[0], batch)]


def make_session(
    model: onnx.ModelProto,
    threads: int | None = None,
    allow_spinning: bool | None = None,
    arena: bool = True,
) -> Any:
    """A CPU session for an in-memory ``model``, the fused op made runnable (``with_cpu_temporal_diff``).

    Not a second factory: the graph is adapted here and handed to the one factory,
    :func:`tdmi.plugins.ort.create_session`. ``arena=False`` for one-off checks and calibration
    probes (timed sessions keep the arena).
    """
    return create_session(
        with_cpu_temporal_diff(model).SerializeToString(),
        threads=threads,
        allow_spinning=allow_spinning,
        arena=arena,
    )


class _TemporalDiffOp:
    """Factory for the ``onnx.reference`` implementation (class built lazily: onnx.reference is heavy)."""

    cls: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.cls is None:
            from onnx.reference.op_run import OpRun

            class TemporalDiff(OpRun):
                op_domain = SPEC.domain

                def _run(self, x: np.ndarray, **attrs: Any) -> tuple[np.ndarray]:
                    if SPEC.num_frames_attr not in attrs:
                        raise ExportError(f"TemporalDiff node without {SPEC.num_frames_attr!r}")
                    return (temporal_diff_reference(x, int(attrs[SPEC.num_frames_attr])),)

            cls.cls = TemporalDiff
        return cls.cls


def run_onnx(
    path_or_model: str | os.PathLike[str] | onnx.ModelProto,
    clips: np.ndarray,
    *,
    engine: Engine = "onnxruntime",
    threads: int | None = None,
) -> np.ndarray:
    """Heatmaps for ``clips`` [N, T, 3, H, W] on the CPU, fused or not, in fixed-batch chunks if needed."""
    model = _as_model(path_or_model)
    x = np.ascontiguousarray(clips, dtype=np.float32)
    if x.ndim != 5:
        raise DataError(f"clips must be [N, T, 3, H, W], got shape {x.shape}")
    chunks = _chunks(x, static_batch(model))
    if engine == "onnxruntime":
        sess = make_session(model, threads, arena=False)
        outs = [sess.run(None, {INPUT_NAME: c})[0] for c in chunks]
    elif engine == "reference":
        from onnx.reference import ReferenceEvaluator

        ref = ReferenceEvaluator(model, new_ops=[_TemporalDiffOp.get()])
        outs = [cast(list[Any], ref.run(None, {INPUT_NAME: c}))[0] for c in chunks]  # outputs as a list
    else:
        raise ExportError(f"unknown engine {engine!r}: use onnxruntime or reference")
    return np.concatenate([np.asarray(o, dtype=np.float32) for o in outs], axis=0)
