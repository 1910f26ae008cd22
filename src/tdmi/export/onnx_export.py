"""PyTorch TDMI -> one self-contained, checked and verified ONNX file.

The dynamo exporter turns ``torchvision.ops.deform_conv2d`` into ONNX ``DeformConv`` (opset 19)
and records every node's module scope; we rename nodes after that scope (``tde/stage2/diff/Sub_1``)
so rewrites and people can find the temporal-difference blocks by name.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import io
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from tdmi.artifacts.onnx_meta import INPUT_NAME, OUTPUT_NAME
from tdmi.errors import ConfigError, ExportError, TdmiError
from tdmi.eval.metrics import HeatmapError, compare_heatmaps
from tdmi.export.metadata import write_metadata
from tdmi.export.ort_ops import run_onnx
from tdmi.plugins.availability import require_onnxruntime
from tdmi.spec.config import TDMIConfig, resolve_config
from tdmi.utils import atomic_path

MIN_OPSET = 19  # first opset with DeformConv
MAX_OPSET = 23
FORBIDDEN_OPS = frozenset({"Loop", "Scan", "If", "SequenceConstruct", "SequenceAt", "Dropout"})
# Modules that exist only for training (RDM's noisy gate, the MI estimator): never in a graph.
TRAINING_ONLY_SCOPES = ("rdm/noisy", "mi_estimator", "vclub")
DEFAULT_RTOL = 1e-3  # of the reference heatmaps' peak magnitude
SCOPE_KEY = "pkg.torch.onnx.name_scopes"

BatchSpec = int | Literal["dynamic"]


@dataclass
class VerificationReport:
    """ONNX Runtime (CPU) against PyTorch on the built-in sample clip(s)."""

    error: HeatmapError
    batches: list[int]
    rtol: float
    passed: bool
    clip_source: str = "built-in sample clip"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["error"] = self.error.to_dict()
        return d

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        sizes = ", ".join(map(str, self.batches))
        return f"{verdict} (batch {sizes}; tolerance rel {self.rtol:g}): {self.error.summary()}"


@dataclass
class ExportResult:
    path: Path
    config: TDMIConfig
    verification: VerificationReport | None
    seconds: float
    opset: int
    batch: BatchSpec
    op_counts: dict[str, int] = field(default_factory=dict)
    weights: str = "random"  # "random" or the checkpoint path


# ------------------------------------------------------------------------------------------- model


def _resolve_model(
    config: TDMIConfig | str | None, checkpoint: Path | None, model: Any | None
) -> tuple[Any, TDMIConfig, str]:
    """The eval-mode model, its config and a word on where the weights came from."""
    import torch

    from tdmi.model import TDMI, load_checkpoint

    cfg = resolve_config(config) if config is not None else None
    if model is not None:
        mcfg: TDMIConfig = model.config
        if cfg is not None and {**cfg.to_dict(), "name": ""} != {**mcfg.to_dict(), "name": ""}:
            raise ConfigError(f"config {cfg.name!r} does not match the given model's config {mcfg.name!r}")
        return model.eval(), mcfg, "given model"
    if checkpoint is not None:
        m = load_checkpoint(checkpoint, config=cfg)
        return m.eval(), m.config, str(checkpoint)
    if cfg is None:
        raise ConfigError("say which network to export: --config PRESET|config.json and/or --checkpoint PATH")
    warnings.warn(
        f"no checkpoint given: exporting {cfg.name} with random weights (fine for testing the pipeline, "
        "useless for predictions)",
        stacklevel=3,
    )
    with torch.random.fork_rng():  # reproducible random weights without touching the caller's RNG
        torch.manual_seed(0)
        net = TDMI(cfg).eval()
    return net, cfg, "random"


def _check_args(opset: int, batch: BatchSpec, deform_conv: str | None = None) -> None:
    """The export options every export (single graph or split pair) refuses before loading a model."""
    if deform_conv not in (None, "native", "decomposed"):
        raise ExportError(f"deform_conv must be 'native' or 'decomposed', got {deform_conv!r}")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ExportError(
            f"opset {opset} is too low: DeformConv needs opset >= {MIN_OPSET} (use --opset {MIN_OPSET})"
        )
    if opset > MAX_OPSET:
        raise ExportError(
            f"opset {opset} is newer than this toolkit supports (<= {MAX_OPSET}): use --opset {MIN_OPSET}"
        )
    if batch != "dynamic" and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise ExportError(f"batch must be a positive integer or 'dynamic', got {batch!r}")


def check_writable(output: Path) -> None:
    """Fail before minutes of work when the artifact could not be written anyway."""
    parent = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise ExportError(f"output {output} is a folder: give a file name such as {output / 'model.onnx'}")
    if not parent.is_dir():
        raise ExportError(f"output folder {parent} does not exist: create it or choose another --output")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"output folder {parent} is not writable: choose another --output")


def example_clips(config: TDMIConfig, n: int) -> np.ndarray:
    """``n`` real-looking clips: the built-in sample clip first, then generated variations."""
    from tdmi.data.sample import sample_clip, sample_clips

    clip, _ = sample_clip(config.input_size, config.num_frames)
    if n == 1:
        return clip
    more, _ = sample_clips(n - 1, config.input_size, config.num_frames, seed=1)
    return np.concatenate([clip, more], axis=0)


# ------------------------------------------------------------------------------------------- graph


def _scope_of(node: onnx.NodeProto) -> list[str]:
    for p in node.metadata_props:
        if p.key == SCOPE_KEY:
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return []
            return [s for s in scopes[:-1] if s] if isinstance(scopes, list) else []
    return []


def name_nodes_by_scope(model: onnx.ModelProto) -> None:
    """Rename nodes ``module/path/OpType_i`` from the exporter's scope records (unique names)."""
    counts: Counter[str] = Counter()
    for node in model.graph.node:
        scopes = _scope_of(node)
        prefix = scopes[-1].replace(".", "/") if scopes else ""
        base = f"{prefix}/{node.op_type}" if prefix else node.op_type
        node.name = f"{base}_{counts[base]}"
        counts[base] += 1


def _strip_node_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node records (stack traces with local paths) once names carry the scope."""
    for node in model.graph.node:
        del node.metadata_props[:]
    for vi in list(model.graph.input) + list(model.graph.output):
        del vi.metadata_props[:]


def _set_batch_dim(model: onnx.ModelProto, batch: BatchSpec) -> None:
    for vi in list(model.graph.input) + list(model.graph.output):
        dim = vi.type.tensor_type.shape.dim[0]
        if batch == "dynamic":
            dim.Clear()
            dim.dim_param = "batch"
        elif dim.dim_value != batch:
            raise ExportError(
                f"exported {vi.name} has batch {dim.dim_value or dim.dim_param}, expected {batch}"
            )


def _constant_names(model: onnx.ModelProto) -> set[str]:
    names = {i.name for i in model.graph.initializer}
    return names | {n.output[0] for n in model.graph.node if n.op_type == "Constant"}


def check_graph(model: onnx.ModelProto, config: TDMIConfig) -> None:
    """Full ONNX check + shape inference + the properties deployment relies on."""
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the exported graph fails the ONNX checker: {str(e).splitlines()[0]}") from None
    ops = Counter(n.op_type for n in model.graph.node)
    bad = sorted(set(ops) & FORBIDDEN_OPS)
    if bad:
        raise ExportError(
            f"the exported graph contains {', '.join(bad)}: control flow/training ops must not appear"
        )
    check_deform_conv(model, config.deform_conv)
    leaked = sorted(
        {n.name for n in model.graph.node if any(s in n.name.lower() for s in TRAINING_ONLY_SCOPES)}
    )
    if leaked:
        raise ExportError(f"training-only nodes leaked into the graph: {', '.join(leaked[:3])}")
    consts = _constant_names(model)
    for j in range(1, 5):
        diff_nodes = [n for n in model.graph.node if n.name.startswith(f"tde/stage{j}/diff/")]
        if not any(n.op_type == "Sub" for n in diff_nodes):
            raise ExportError(f"no temporal-difference block named tde/stage{j}/diff in the graph")
        for n in diff_nodes:
            if n.op_type == "Slice" and not all(i in consts for i in n.input[1:] if i):
                raise ExportError(f"{n.name} slices by a computed index: the differences must be static")
    names = [i.name for i in model.graph.input], [o.name for o in model.graph.output]
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise ExportError(f"unexpected graph inputs/outputs {names}")
    out_dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim[1:]]
    want = [config.num_joints, *config.heatmap_size]
    if out_dims != want:
        raise ExportError(f"heatmaps have shape [B, {out_dims}], expected [B, {want}]")


def check_deform_conv(model: onnx.ModelProto, form: str) -> None:
    """One DCN per TDE stage, in the requested form: ``DeformConv``, or GridSample under ``dcn``."""
    deform = [n for n in model.graph.node if n.op_type == "DeformConv"]
    if form == "native":
        if len(deform) != 4:
            raise ExportError(f"expected 4 DeformConv nodes (one per TDE stage), found {len(deform)}")
        return
    if deform:
        raise ExportError(f"decomposed DCN export still contains DeformConv: {deform[0].name}")
    for j in range(1, 5):
        scope = f"tde/stage{j}/dcn/"
        if not any(n.op_type == "GridSample" and n.name.startswith(scope) for n in model.graph.node):
            raise ExportError(f"no decomposed DCN (GridSample) named {scope}... in the graph")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter and onnxslim print progress to stdout; keep the CLI's own output readable."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def trace_to_onnx(
    model: Any, config: TDMIConfig, batch: BatchSpec, opset: int, example: np.ndarray | None = None
) -> onnx.ModelProto:
    """Run the dynamo exporter and return an in-memory ModelProto (weights embedded).

    ``example`` replaces the built-in sample clips as the tracing input (only its shape matters);
    the GPU evidence kit passes one because the sample clips are drawn with OpenCV.
    """
    import torch

    n = 2 if batch == "dynamic" else int(batch)
    if example is not None and (example.shape[0] != n or example.dtype != np.float32):
        raise ExportError(f"example must be float32 with batch {n}, got {example.dtype} {example.shape}")
    x = torch.from_numpy(example if example is not None else example_clips(config, n))
    dyn = {"frames": {0: torch.export.Dim("batch", min=1, max=1024)}} if batch == "dynamic" else None
    return dynamo_export(model, (x,), [INPUT_NAME], [OUTPUT_NAME], opset, dyn)


def dynamo_export(
    module: Any,
    args: tuple[Any, ...],
    inputs: list[str],
    outputs: list[str],
    opset: int,
    dynamic_shapes: Any = None,
) -> onnx.ModelProto:
    """``torch.onnx.export(dynamo=True)`` to an in-memory proto, its failures as one ExportError line."""
    import torch

    try:
        with _quiet(), torch.no_grad():
            prog = torch.onnx.export(
                module,
                args,
                dynamo=True,
                opset_version=opset,
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                optimize=True,
            )
    except TdmiError:
        raise
    except Exception as e:  # torch.export / onnxscript raise many types; one line is what a user can use
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ExportError(
            f"torch.onnx.export failed: {type(e).__name__}: {first} (re-run with --verbose)"
        ) from e
    if prog is None:
        raise ExportError("torch.onnx.export returned no program")
    return prog.model_proto


def simplify_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim: constant folding, dead-code and redundant-op removal (node names are kept)."""
    import onnxslim

    try:
        with _quiet():
            slim = onnxslim.slim(model)
    except Exception as e:  # onnxslim has no error hierarchy of its own
        raise ExportError(
            f"onnxslim failed on the exported graph: {type(e).__name__}: {e} (use --no-simplify)"
        ) from e
    if not isinstance(slim, onnx.ModelProto):
        raise ExportError("onnxslim returned no model (use --no-simplify)")
    return slim


def build_onnx(
    model: Any,
    config: TDMIConfig,
    *,
    batch: BatchSpec = 1,
    opset: int = MIN_OPSET,
    simplify: bool = True,
    example: np.ndarray | None = None,
) -> onnx.ModelProto:
    """Trace, name, simplify and check (no metadata, nothing written)."""
    from tdmi import __version__

    proto = trace_to_onnx(model, config, batch, opset, example)
    name_nodes_by_scope(proto)
    _strip_node_metadata(proto)
    if simplify:
        proto = simplify_graph(proto)
    _set_batch_dim(proto, batch)
    proto.producer_name, proto.producer_version = "tdmi-deploy", __version__
    check_graph(proto, config)
    return proto


# ------------------------------------------------------------------------------------------ verify


def torch_heatmaps(model: Any, clips: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model.eval()(torch.from_numpy(np.ascontiguousarray(clips))).numpy()


def verify_onnx(
    path: Path | onnx.ModelProto, model: Any, config: TDMIConfig, batch: BatchSpec, rtol: float = DEFAULT_RTOL
) -> VerificationReport:
    """ORT CPU vs PyTorch; a dynamic file is checked at batch 1 *and* 3 (the classic failure)."""
    require_onnxruntime()
    sizes = [1, 3] if batch == "dynamic" else [int(batch)]
    clips = example_clips(config, max(sizes))
    errors: list[HeatmapError] = []
    refs, outs = [], []
    for b in sizes:
        ref = torch_heatmaps(model, clips[:b])
        out = run_onnx(path, clips[:b])
        errors.append(compare_heatmaps(ref, out))
        refs.append(ref)
        outs.append(out)
    total = compare_heatmaps(np.concatenate(refs), np.concatenate(outs))
    passed = all(e.finite and e.max_rel <= rtol and e.keypoint_agreement == 1.0 for e in errors)
    return VerificationReport(error=total, batches=sizes, rtol=rtol, passed=passed)


# ------------------------------------------------------------------------------------------ public


@contextlib.contextmanager
def steps(enabled: bool, total: int) -> Iterator[Any]:
    """A rich progress bar over named steps (exports take seconds to minutes); a no-op when disabled."""
    if not enabled:
        yield lambda _desc: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("starting", total=total)
        started = [False]

        def step(desc: str) -> None:
            if started[0]:
                bar.advance(task)
            started[0] = True
            bar.update(task, description=desc)

        yield step
        bar.update(task, completed=total)


def export_onnx(
    config: TDMIConfig | str | None,
    output: Path | str,
    *,
    checkpoint: Path | str | None = None,
    model: Any | None = None,
    batch: BatchSpec = 1,
    opset: int = MIN_OPSET,
    verify: bool = True,
    simplify: bool = True,
    rtol: float = DEFAULT_RTOL,
    progress: bool = True,
    deform_conv: str | None = None,
) -> ExportResult:
    """Export TDMI to ONNX, check it, verify it against PyTorch, then write it atomically.

    ``deform_conv`` (``native``/``decomposed``; default: the model config's) picks the DCN form in
    the graph. Nothing is written when any step fails (including verification outside tolerance).
    """
    t0 = time.perf_counter()
    output = Path(output)
    _check_args(opset, batch, deform_conv)
    check_writable(output)
    if verify:
        require_onnxruntime()
    with steps(progress, total=4 if verify else 3) as step:
        step("loading the model")
        net, cfg, weights = _resolve_model(config, Path(checkpoint) if checkpoint else None, model)
        from tdmi.model.checkpoint import check_finite_weights

        check_finite_weights(net.state_dict(), f"the model ({weights})")
        restore = cfg.deform_conv
        if deform_conv is not None and deform_conv != cfg.deform_conv:
            net.set_deform_conv(deform_conv)  # same weights; the config in the file says which form
            cfg = net.config
        try:
            step("exporting (torch.onnx dynamo)")
            proto = build_onnx(net, cfg, batch=batch, opset=opset, simplify=simplify)
        finally:
            if model is not None and restore != cfg.deform_conv:
                net.set_deform_conv(restore)  # a caller's model is left as it was given
        write_metadata(
            proto,
            cfg,
            precision="fp32",
            target="any",
            batch=batch,
            extra={"weights": weights, "opset": opset},
        )
        report: VerificationReport | None = None
        step("writing")
        with atomic_path(output) as tmp:
            onnx.save_model(proto, str(tmp), save_as_external_data=False)
            if verify:
                step("verifying with ONNX Runtime")
                gc.collect()  # the exporter's reference cycles (W48: GBs) go before ORT and torch run
                report = verify_onnx(tmp, net, cfg, batch, rtol)
                if not report.passed:
                    raise ExportError(
                        f"ONNX Runtime disagrees with PyTorch, nothing written: {report.summary()}"
                    )
    ops = dict(sorted(Counter(n.op_type for n in proto.graph.node).items()))
    return ExportResult(
        path=output,
        config=cfg,
        verification=report,
        seconds=time.perf_counter() - t0,
        opset=opset,
        batch=batch,
        op_counts=ops,
        weights=weights,
    )
