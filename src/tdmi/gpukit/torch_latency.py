"""Section 4, end-to-end PyTorch latency: TDMI-W48 in eager, FP16, channels_last, CUDA graphs, compile.

Random weights, 384x288, T = 3, at batch 1/8/32; every row is timed per call (synchronised) and
checked against the strict eager FP32 reference of the same batch.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from tdmi.gpukit.measure import raising, require_torch_cuda, skip, strict_fp32, sync, time_calls
from tdmi.gpukit.options import TOY_PRESET, W48_PRESET, Options
from tdmi.gpukit.record import Recorder


@dataclass(frozen=True)
class LatencyVariant:
    name: str
    dtype: str  # "fp32" or "fp16"
    channels_last: bool
    mode: str  # "eager", "cudagraph", or a torch.compile mode ("default", "max-autotune-no-cudagraphs")


LATENCY_VARIANTS: tuple[LatencyVariant, ...] = (
    LatencyVariant("eager-fp32", "fp32", False, "eager"),
    LatencyVariant("eager-fp16", "fp16", False, "eager"),
    LatencyVariant("eager-fp16-channels_last", "fp16", True, "eager"),
    LatencyVariant("cudagraph-fp16-channels_last", "fp16", True, "cudagraph"),
    LatencyVariant("compile-fp16-channels_last", "fp16", True, "default"),
    LatencyVariant("compile-max-autotune-fp16-channels_last", "fp16", True, "max-autotune-no-cudagraphs"),
)
# Seconds a step needs before it is started (compiles cannot be interrupted once begun).
LATENCY_NEED_S: dict[str, float] = {"eager": 5.0, "cudagraph": 8.0, "default": 40.0}
LATENCY_NEED_DEFAULT_S = 90.0  # max-autotune


def _variant_skip_reason(v: LatencyVariant, opts: Options, cuda: bool) -> str:
    if v.mode == "cudagraph" and not cuda:
        return "CUDA graphs need a CUDA GPU"
    if v.dtype == "fp16" and not cuda:
        return "FP16 inference is timed on CUDA only (CPU half kernels are not a deployment path)"
    if v.mode not in ("eager", "cudagraph") and not opts.compile_enabled:
        return "torch.compile is left out of the quick CPU dry run (minutes of inductor work)"
    return ""


def _prepare_variant(model: Any, v: LatencyVariant) -> Any:
    import torch

    m = copy.deepcopy(model)
    if v.dtype == "fp16":
        m = m.half()
    if v.channels_last:
        m = m.to(memory_format=torch.channels_last)
    if v.mode not in ("eager", "cudagraph"):
        torch._dynamo.reset()  # each compiled variant starts clean (and far from the recompile limit)
        m = torch.compile(m, mode=None if v.mode == "default" else v.mode, dynamic=False)
    return m


def _cuda_graph_runner(m: Any, x: Any) -> Callable[[Any], Any]:
    """Capture one forward on a static input; replay copies the new clips in first."""
    import torch

    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(3):
            m(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        static_y = m(static_x)

    def run(inp: Any) -> Any:
        static_x.copy_(inp)
        graph.replay()
        return static_y

    return run


@dataclass(frozen=True)
class _Timing:
    """What every row of one run shares: device, iterations, inputs and the FP32 references."""

    cuda: bool
    warmup: int
    iters: int
    max_s: float
    inputs: dict[int, Any]
    refs: dict[int, Any]

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"


def _time_row(timing: _Timing, v: LatencyVariant, m: Any, b: int) -> dict[str, Any]:
    """One variant at one batch: first call, per-call latency, peak memory, agreement with FP32."""
    import torch

    from tdmi.export.onnx_export import compare_heatmaps

    cuda = timing.cuda
    x = timing.inputs[b].to(device=timing.device, dtype=torch.float16 if v.dtype == "fp16" else torch.float32)
    resident = 0
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
    ctx = strict_fp32() if v.dtype == "fp32" else contextlib.nullcontext()
    with ctx, torch.inference_mode():
        t0 = time.perf_counter()
        fn = _cuda_graph_runner(m, x) if v.mode == "cudagraph" else m
        y = fn(x)
        sync(cuda)
        out: dict[str, Any] = {"first_call_s": round(time.perf_counter() - t0, 3)}
        out.update(time_calls(lambda: fn(x), cuda, timing.warmup, timing.iters, timing.max_s))
    out["clips_per_s"] = b / (out["p50_ms"] / 1e3)
    if cuda:
        run_peak = torch.cuda.max_memory_allocated() - resident
        out["peak_mem_mib"] = round((run_peak + _weight_bytes(m)) / 2**20, 1)
    if b in timing.refs:
        err = compare_heatmaps(timing.refs[b], y.float().cpu().numpy())
        out.update(
            heatmap_max_abs=err.max_abs,
            heatmap_max_rel=err.max_rel,
            keypoint_agreement=err.keypoint_agreement,
            finite=err.finite,
        )
    return out


def _setup(cfg: Any, opts: Options, device: str, batches: list[int], reps: tuple[int, int]) -> dict[str, Any]:
    return {
        "config": cfg.name,
        "input": ["B", cfg.num_frames, 3, *cfg.input_size],
        "weights": f"random (seed {opts.seed})",
        "device": device,
        "batches": batches,
        "warmup": reps[0],
        "iters": reps[1],
        "reference": "eager FP32 with TF32 off (the project's strict reference)",
        "timing": "per call, synchronised wall clock (what a caller waits)",
        "peak_memory": "this variant's weights + peak allocated during its calls beyond what was "
        "resident before (activations, workspaces, CUDA graph pool)",
    }


def _references(model: Any, timing: _Timing, rec: Recorder) -> None:
    """The strict eager FP32 output of every batch, the yardstick of every variant's agreement."""
    import numpy as np
    import torch

    for b in timing.inputs:

        def reference(b: int = b) -> dict[str, Any]:
            with strict_fp32(), torch.inference_mode():
                timing.refs[b] = model(timing.inputs[b].to(timing.device)).float().cpu().numpy()
            return {"finite": bool(np.isfinite(timing.refs[b]).all())}

        rec.row("references", {"batch": b}, reference, need_s=2.0)


def _run_variant(model: Any, v: LatencyVariant, opts: Options, timing: _Timing, rec: Recorder) -> None:
    """Every batch of one variant: skipped with the reason, left out by the time guard, or timed."""
    base = {"variant": v.name, "dtype": v.dtype, "channels_last": v.channels_last, "mode": v.mode}
    batches = list(timing.inputs)
    reason = _variant_skip_reason(v, opts, timing.cuda)
    if reason:
        for b in batches:
            rec.row("rows", {**base, "batch": b}, skip(reason))
        return
    need = LATENCY_NEED_S.get(v.mode, LATENCY_NEED_DEFAULT_S) if not opts.quick else 1.0
    if rec.time_left() < need:
        for b in batches:
            rec.row("rows", {**base, "batch": b}, lambda: {}, need_s=need)
        return
    try:
        m = _prepare_variant(model, v)
    except Exception as e:
        for b in batches:
            rec.row("rows", {**base, "batch": b}, raising(e))
        return
    step_need = need if v.mode not in ("eager",) else (1.0 if opts.quick else 3.0)
    for b in batches:
        rec.row("rows", {**base, "batch": b}, partial(_time_row, timing, v, m, b), need_s=step_need)
    del m
    if timing.cuda:
        import torch

        torch.cuda.empty_cache()


def section_torch_latency(opts: Options, rec: Recorder) -> None:
    import torch

    from tdmi.model import TDMI, get_preset

    cuda = opts.cuda
    if cuda:
        require_torch_cuda()
    device = "cuda" if cuda else "cpu"
    cfg = get_preset(TOY_PRESET if opts.quick else W48_PRESET)
    batches = [1, 2] if opts.quick else [1, 8, 32]
    warmup, iters, max_s = (0, 2, 1.0) if opts.quick else (3, 20, 4.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        model = TDMI(cfg).eval().to(device)
    rec.set("setup", _setup(cfg, opts, device, batches, (warmup, iters)))
    gen = torch.Generator().manual_seed(opts.seed + 1)
    inputs = {b: torch.randn((b, cfg.num_frames, 3, *cfg.input_size), generator=gen) for b in batches}
    timing = _Timing(cuda, warmup, iters, max_s, inputs, {})
    _references(model, timing, rec)
    for v in LATENCY_VARIANTS:
        _run_variant(model, v, opts, timing, rec)
    _speedups(rec)


def _weight_bytes(m: Any) -> int:
    return sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers()))


def _speedups(rec: Recorder) -> None:
    """Each row's speed-up over eager FP32 at the same batch (same run, same inputs)."""
    rows = rec.data.get("rows", [])
    base = {r["batch"]: r["p50_ms"] for r in rows if r["variant"] == "eager-fp32" and r["status"] == "ok"}
    for r in rows:
        if r["status"] == "ok" and r["batch"] in base:
            r["speedup_vs_eager_fp32"] = base[r["batch"]] / r["p50_ms"]
    rec.flush()


# ----------------------------------------------------------------------------------- 5. DCN forms
