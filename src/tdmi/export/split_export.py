"""``tdmi-export onnx --split``: a per-frame backbone graph and a temporal-head graph.

Over a video a frame's backbone features can be computed once and reused by the T clips that hold
it (``tdmi-infer --reuse-features``). The pair is checked like the single graph (ONNX checker,
static named differences, no training-only nodes) and verified on ONNX Runtime: backbone on every
frame, then the head, must equal the single exported graph within ``SPLIT_ATOL`` (and PyTorch within
the usual tolerance). Both files carry the usual metadata plus ``extra.split`` = backbone / head.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tdmi.errors import ExportError
from tdmi.export.metadata import write_metadata
from tdmi.export.onnx_export import (
    DEFAULT_RTOL,
    FORBIDDEN_OPS,
    MIN_OPSET,
    HeatmapError,
    _check_args,
    _resolve_model,
    _strip_node_metadata,
    build_onnx,
    check_deform_conv,
    check_writable,
    compare_heatmaps,
    dynamo_export,
    example_clips,
    name_nodes_by_scope,
    simplify_graph,
    steps,
    torch_heatmaps,
)
from tdmi.export.ort_ops import make_session
from tdmi.plugins.availability import require_onnxruntime
from tdmi.spec.config import TDMIConfig
from tdmi.utils import atomic_path

SPLIT_ATOL = 1e-5  # composition vs the single graph, both on ONNX Runtime CPU
BACKBONE_INPUT = "frame"
STAGES = ("stage1", "stage2", "stage3", "stage4")
HEATMAPS = "heatmaps"


@dataclass
class SplitVerification:
    vs_single_graph: HeatmapError  # composition vs the one-graph export, both ORT
    vs_torch: HeatmapError
    atol: float
    rtol: float
    passed: bool

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"{verdict}: backbone+head vs single graph max abs {self.vs_single_graph.max_abs:.3g} "
            f"(tolerance {self.atol:g}); vs PyTorch max rel {self.vs_torch.max_rel:.3g} (tol. {self.rtol:g})"
        )


@dataclass
class SplitExportResult:
    backbone: Path
    head: Path
    config: TDMIConfig
    verification: SplitVerification | None
    seconds: float
    opset: int
    weights: str


def _trace(
    module: Any, args: tuple[Any, ...], inputs: list[str], outputs: list[str], opset: int
) -> onnx.ModelProto:
    import torch

    dyn = {name: {0: torch.export.Dim("batch", min=1, max=1024)} for name in inputs}
    proto = dynamo_export(module, args, inputs, outputs, opset, tuple(dyn.values()))
    name_nodes_by_scope(proto)
    _strip_node_metadata(proto)
    return proto


def _check(proto: onnx.ModelProto, part: str, deform_conv: str = "native") -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the {part} graph fails the ONNX checker: {str(e).splitlines()[0]}") from None
    ops = Counter(n.op_type for n in proto.graph.node)
    bad = sorted(set(ops) & FORBIDDEN_OPS)
    if bad:
        raise ExportError(f"the {part} graph contains {', '.join(bad)}")
    if part == "head":
        check_deform_conv(proto, deform_conv)  # the DCN in the form the config asks for
    elif ops.get("DeformConv", 0):
        raise ExportError(f"the {part} graph has {ops['DeformConv']} DeformConv nodes, expected 0")
    if part == "head":
        for j in range(1, 5):
            if not any(
                n.name.startswith(f"tde/stage{j}/diff/") and n.op_type == "Sub" for n in proto.graph.node
            ):
                raise ExportError(f"no temporal-difference block named tde/stage{j}/diff in the head graph")


def build_split_onnx(
    net: Any, cfg: TDMIConfig, opset: int = MIN_OPSET, simplify: bool = True
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Trace, name, simplify and check both halves (dynamic batch, nothing written)."""
    import torch

    from tdmi.model.split import split_model

    backbone, head = split_model(net)
    clips = torch.from_numpy(example_clips(cfg, 2))
    frames = clips.flatten(0, 1)
    with torch.no_grad():
        feats = backbone(frames)
    stacks = tuple(f.reshape(2, cfg.num_frames, *f.shape[1:]) for f in feats)
    b = _trace(backbone, (frames,), [BACKBONE_INPUT], list(STAGES), opset)
    h = _trace(head, stacks, list(STAGES), [HEATMAPS], opset)
    if simplify:
        b, h = simplify_graph(b), simplify_graph(h)
    _check(b, "backbone")
    _check(h, "head", cfg.deform_conv)
    return b, h


def run_split(backbone: Any, head: Any, clips: np.ndarray) -> np.ndarray:
    """ORT sessions (or paths/protos) of the pair: backbone on each frame, stacked, then the head."""
    bs = backbone if hasattr(backbone, "run") else make_session(_proto(backbone))
    hs = head if hasattr(head, "run") else make_session(_proto(head))
    n, t = clips.shape[:2]
    feats = bs.run(None, {BACKBONE_INPUT: np.ascontiguousarray(clips.reshape(n * t, *clips.shape[2:]))})
    feeds = {
        s: np.ascontiguousarray(f.reshape(n, t, *f.shape[1:])) for s, f in zip(STAGES, feats, strict=True)
    }
    return np.asarray(hs.run(None, feeds)[0], dtype=np.float32)


def _proto(x: Any) -> onnx.ModelProto:
    return x if isinstance(x, onnx.ModelProto) else onnx.load(str(x))


def verify_split(
    backbone: Any, head: Any, single: onnx.ModelProto, net: Any, cfg: TDMIConfig, rtol: float = DEFAULT_RTOL
) -> SplitVerification:
    """Composition vs the single graph (ORT, batch 1 and 3) and vs PyTorch."""
    clips = example_clips(cfg, 3)
    single_sess = make_session(single)
    comp = np.concatenate([run_split(backbone, head, clips[:1]), run_split(backbone, head, clips[1:])])
    one = np.concatenate([single_sess.run(None, {"frames": c[None]})[0] for c in clips])
    ref = torch_heatmaps(net, clips)
    e_single, e_torch = compare_heatmaps(one, comp), compare_heatmaps(ref, comp)
    passed = e_single.finite and e_single.max_abs <= SPLIT_ATOL and e_torch.max_rel <= rtol
    return SplitVerification(e_single, e_torch, SPLIT_ATOL, rtol, passed)


def export_split_onnx(
    config: TDMIConfig | str | None,
    output: Path | str,
    *,
    checkpoint: Path | str | None = None,
    model: Any | None = None,
    opset: int = MIN_OPSET,
    verify: bool = True,
    simplify: bool = True,
    rtol: float = DEFAULT_RTOL,
    progress: bool = True,
    deform_conv: str | None = None,
) -> SplitExportResult:
    """Write ``<stem>.backbone.onnx`` and ``<stem>.head.onnx`` beside ``output``; both or neither.

    ``deform_conv="decomposed"`` writes the head's DCN as GridSample + Conv (what OpenVINO reads).
    """
    from tdmi.artifacts.split import split_paths

    t0 = time.perf_counter()
    _check_args(opset, "dynamic", deform_conv)
    bpath, hpath = split_paths(output)
    check_writable(bpath)
    if verify:
        require_onnxruntime()
    with steps(progress, total=4 if verify else 3) as step:
        step("loading the model")
        net, cfg, weights = _resolve_model(config, Path(checkpoint) if checkpoint else None, model)
        if deform_conv is not None and deform_conv != cfg.deform_conv:
            if model is not None:
                raise ExportError("deform_conv applies to a config/checkpoint export, not a given model")
            net.set_deform_conv(deform_conv)  # same weights; the config in the files says which form
            cfg = net.config
        step("exporting backbone and head (torch.onnx dynamo)")
        b, h = build_split_onnx(net, cfg, opset, simplify)
        for proto, part in ((b, "backbone"), (h, "head")):
            write_metadata(
                proto, cfg, batch="dynamic", extra={"weights": weights, "opset": opset, "split": part}
            )
        report = None
        if verify:
            step("verifying: backbone + head vs the single graph (ONNX Runtime)")
            single = build_onnx(net, cfg, batch=1, opset=opset, simplify=simplify)
            report = verify_split(b, h, single, net, cfg, rtol)
            if not report.passed:
                raise ExportError(f"the split graphs disagree, nothing written: {report.summary()}")
        step("writing")
        with atomic_path(bpath) as tb, atomic_path(hpath) as th:
            onnx.save_model(b, str(tb), save_as_external_data=False)
            onnx.save_model(h, str(th), save_as_external_data=False)
    return SplitExportResult(bpath, hpath, cfg, report, time.perf_counter() - t0, opset, weights)
