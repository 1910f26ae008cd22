"""Replace each TDE stage's slice/sub/concat difference block by one ``tdmi::TemporalDiff`` node.

The block is found by structure (Reshape to [B, T, C, h, w] -> constant-index Slices on the frame
axis -> ``x[k+1] - x[k]`` Subs -> Concat on channels -> Reshape to [B, (T-1)*C, h, w]), then the
node names (``tde/stage{j}/diff/...``) are checked to say which stage it is. Runs after FP16
conversion and quantization: in their graphs the block keeps this shape (AutoCast only changes its
element type; ModelOpt puts Q/DQ around it, never inside), so the fused node simply takes the same
input and produces the same output tensor. The reshaped feature and its frame slices may have
other consumers (stage 4's key-frame slice feeds the head): only nodes left without one are removed.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tdmi.artifacts.onnx_meta import KEY_CONFIG
from tdmi.errors import ExportError
from tdmi.export.metadata import check_graph_io, read_metadata, update_metadata
from tdmi.plugins.temporal_diff import SPEC, node_attributes
from tdmi.plugins.temporal_diff import opset_import as tdmi_opset_import
from tdmi.utils import atomic_path

_STAGE_RE = re.compile(r"(?:^|/)tde/stage(\d+)/diff/")


@dataclass
class DiffPattern:
    """One matched difference block."""

    stage: int | None
    num_frames: int
    input_name: str
    output_name: str
    node_names: list[str] = field(default_factory=list)


def _const(gs_tensor: Any) -> np.ndarray | None:
    import onnx_graphsurgeon as gs

    if isinstance(gs_tensor, gs.Constant):
        return np.asarray(gs_tensor.values)
    if (
        isinstance(gs_tensor, gs.Variable)
        and len(gs_tensor.inputs) == 1
        and gs_tensor.inputs[0].op == "Constant"
    ):
        value = gs_tensor.inputs[0].attrs.get("value")
        if isinstance(value, gs.Constant):
            return np.asarray(value.values)
    return None


def _slice_frame(node: Any) -> int | None:
    """Frame index ``k`` of a ``Slice(x5, [k], [k+1], axes=[1], steps=[1])``; None if it is not one."""
    if node.op != "Slice" or len(node.inputs) < 3:
        return None
    ins = list(node.inputs)
    vals = [_const(t) if t is not None and getattr(t, "name", None) else None for t in ins[1:5]]
    starts, ends = vals[0], vals[1]
    axes = vals[2] if len(vals) > 2 and vals[2] is not None else np.array([0])
    steps = vals[3] if len(vals) > 3 and vals[3] is not None else np.array([1])
    if starts is None or ends is None or (len(ins) > 3 and ins[3].name and vals[2] is None):
        return None
    if len(ins) > 4 and ins[4].name and vals[3] is None:
        return None
    if starts.size != 1 or ends.size != 1 or axes.size != 1 or steps.size != 1:
        return None
    if int(axes.reshape(-1)[0]) not in (1, -4) or int(steps.reshape(-1)[0]) != 1:
        return None
    k = int(starts.reshape(-1)[0])
    return k if int(ends.reshape(-1)[0]) == k + 1 and k >= 0 else None


def _only_consumer(tensor: Any, node: Any) -> bool:
    return len(tensor.outputs) == 1 and tensor.outputs[0] is node


def _match(concat: Any) -> tuple[DiffPattern, list[Any], Any, Any] | None:
    """The block ending in ``concat``: (pattern, its nodes, input tensor, output tensor)."""
    c = concat
    if c.op != "Concat" or int(c.attrs.get("axis", 0)) not in (2, -3) or not c.inputs:
        return None
    subs = [t.inputs[0] if len(t.inputs) == 1 else None for t in c.inputs]
    if any(s is None or s.op != "Sub" or not _only_consumer(s.outputs[0], c) for s in subs):
        return None
    x5 = None
    slices: dict[int, object] = {}
    for k, sub in enumerate(subs):
        assert sub is not None  # a missing Sub was refused above
        pair = []
        for t in sub.inputs:
            if len(t.inputs) != 1:
                return None
            sl = t.inputs[0]
            idx = _slice_frame(sl)
            if idx is None:
                return None
            if x5 is None:
                x5 = sl.inputs[0]
            elif sl.inputs[0] is not x5:
                return None
            slices[idx] = sl
            pair.append(idx)
        if pair != [k + 1, k]:
            return None
    num_frames = len(subs) + 1
    if x5 is None or len(x5.inputs) != 1 or sorted(slices) != list(range(num_frames)):
        return None
    head = x5.inputs[0]
    if head.op != "Reshape":
        return None
    shape5 = _const(head.inputs[1])
    if shape5 is None or shape5.size != 5 or int(shape5[1]) != num_frames:
        return None
    out = c.outputs[0]
    if len(out.outputs) != 1 or out.outputs[0].op != "Reshape":
        return None
    tail = out.outputs[0]
    shape4 = _const(tail.inputs[1])
    if shape4 is None or shape4.size != 4:
        return None
    ch, hw = int(shape5[2]), [int(v) for v in shape5[3:]]
    if int(shape4[1]) not in (-1, (num_frames - 1) * ch) or [int(v) for v in shape4[2:]] != hw:
        return None
    nodes = [head, *slices.values(), *subs, c, tail]
    stages = {int(m.group(1)) for n in nodes if (m := _STAGE_RE.search(n.name or ""))}
    stage = stages.pop() if len(stages) == 1 else None
    pattern = DiffPattern(
        stage=stage,
        num_frames=num_frames,
        input_name=head.inputs[0].name,
        output_name=tail.outputs[0].name,
        node_names=[n.name for n in nodes],
    )
    return pattern, nodes, head.inputs[0], tail.outputs[0]


def find_temporal_diffs(model: onnx.ModelProto) -> list[DiffPattern]:
    """The difference blocks in ``model`` (nothing is changed)."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    return [m[0] for n in graph.nodes if (m := _match(n)) is not None]


def fuse_temporal_diff(model: onnx.ModelProto, *, expected: int | None = None) -> onnx.ModelProto:
    """A copy of ``model`` with every difference block replaced by ``tdmi::TemporalDiff``.

    With no block found, warns and returns the graph unchanged. ``expected`` (e.g. 4 for TDMI)
    turns a different count into an error, so a half-recognised graph never ships.
    """
    import onnx_graphsurgeon as gs

    try:
        graph = gs.import_onnx(model)
    except Exception as e:  # graphsurgeon raises plain exceptions on malformed graphs
        raise ExportError(f"cannot read the graph for fusing ({type(e).__name__}: {e})") from None
    matches = [m for n in list(graph.nodes) if (m := _match(n)) is not None]
    if not matches:
        warnings.warn(
            "no temporal-difference pattern (Reshape/Slice/Sub/Concat/Reshape) found: graph left unchanged",
            stacklevel=2,
        )
        return model
    if expected is not None and len(matches) != expected:
        raise ExportError(
            f"found {len(matches)} temporal-difference blocks, expected {expected}: graph not fused"
        )
    frames = {p.num_frames for p, *_ in matches}
    if len(frames) != 1:
        raise ExportError(f"difference blocks disagree on the number of frames ({sorted(frames)})")
    stages = [p.stage for p, *_ in matches]
    if None in stages or len(set(stages)) != len(stages):
        warnings.warn(
            "difference blocks found by structure but their names do not say tde/stage{j}/diff: "
            "numbering them in graph order",
            stacklevel=2,
        )
        stages = list(range(1, len(matches) + 1))
    for (pattern, nodes, x, y), stage in zip(matches, stages, strict=True):
        pattern.stage = stage
        nodes[-1].outputs.clear()  # detach the tail; cleanup drops whatever only fed it
        node = gs.Node(
            op=SPEC.op_type,
            name=f"tde/stage{stage}/diff/{SPEC.op_type}",
            domain=SPEC.domain,
            attrs=node_attributes(pattern.num_frames),
            inputs=[x],
            outputs=[y],
        )
        graph.nodes.append(node)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(o for o in model.opset_import if o.domain != SPEC.domain)
    out.opset_import.append(tdmi_opset_import())
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    out.producer_name, out.producer_version = model.producer_name, model.producer_version
    out.doc_string = model.doc_string
    if any(p.key == KEY_CONFIG for p in out.metadata_props):
        cfg = read_metadata(out)["config"]
        if cfg.num_frames != pattern.num_frames:
            raise ExportError(
                f"the difference blocks span {pattern.num_frames} frames, the file's config {cfg.num_frames}"
            )
        update_metadata(out, fused=True)
    return out


def fuse_file(src: Path | str, output: Path | str, *, check: bool = True) -> dict[str, Any]:
    """Fuse an exported file, check the result against the unfused graph on ORT CPU, write atomically."""
    from tdmi.export.metadata import load_onnx_checked
    from tdmi.export.onnx_export import check_writable, compare_heatmaps, example_clips
    from tdmi.export.ort_ops import run_onnx, static_batch, temporal_diff_nodes

    output = Path(output)
    check_writable(output)
    model = load_onnx_checked(Path(src))
    meta = read_metadata(model)
    check_graph_io(model, meta["config"], src)
    if meta["fused"] or temporal_diff_nodes(model):
        raise ExportError(f"{src} is already fused: give the unfused export")
    fused = fuse_temporal_diff(model, expected=4)
    try:
        onnx.checker.check_model(fused, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the fused graph fails the ONNX checker: {str(e).splitlines()[0]}") from None
    error = None
    with atomic_path(output) as tmp:
        onnx.save_model(fused, str(tmp), save_as_external_data=False)
        if check:
            clips = example_clips(meta["config"], static_batch(model) or 2)
            error = compare_heatmaps(run_onnx(model, clips), run_onnx(tmp, clips))
            scale = 1e-5 if meta["precision"] == "fp32" else 1e-2
            if not error.finite or error.max_rel > scale:
                raise ExportError(
                    f"the fused graph disagrees with the unfused one (max rel {error.max_rel:.3g})"
                )
    return {
        "fused": len(temporal_diff_nodes(fused)),
        "variant": read_metadata(fused)["variant"],
        "error": error,
    }
