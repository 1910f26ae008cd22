"""Section 3, kernel bandwidth: :mod:`tdmi.benchmarks.plugin_bandwidth` rows against the goals.

The kernel against a plain copy, the unfused PyTorch ops and ``torch.compile`` of them, with the
goals (>= 90 % of copy bandwidth, >= 2x the unfused ops).
"""

from __future__ import annotations

import time
from typing import Any

from tdmi.gpukit.measure import device_reason, require_torch_cuda, sync
from tdmi.gpukit.options import GOAL_KERNEL_VS_COPY, GOAL_SPEEDUP_VS_UNFUSED, Options
from tdmi.gpukit.record import Recorder, one_line


def _compile_unfused(shape: tuple[int, int, int, int], dtype: str, device: str, cuda: bool) -> Any:
    """(compiled unfused op, compile seconds, error): one static graph per row."""
    import torch

    from tdmi.benchmarks import plugin_bandwidth as pb

    try:
        torch._dynamo.reset()  # one static graph per row, never the recompile limit
        compiled = pb.compile_unfused()
        probe = torch.randn(shape, device=device, dtype=getattr(torch, pb.DTYPES[dtype]))
        t0 = time.perf_counter()
        compiled(probe, 3)
        sync(cuda)
        return compiled, time.perf_counter() - t0, None
    except Exception as e:
        return None, None, one_line(e)


def _row(
    opts: Options, dtype: str, stage: str, dims: tuple[int, int, int], b: int, reps: tuple[int, int]
) -> Any:
    """One (stage, dtype, batch) bandwidth row, judged against the goals."""
    from tdmi.benchmarks import plugin_bandwidth as pb

    cuda = opts.cuda
    device = "cuda" if cuda else "cpu"
    c, h, w = dims
    compiled, compile_s, compile_error = None, None, None
    if opts.compile_enabled:
        compiled, compile_s, compile_error = _compile_unfused((b * 3, c, h, w), dtype, device, cuda)
    warmup, iters = reps
    r = pb.measure(stage, c, h, w, b, 3, dtype, warmup, iters, device=device, kernel=cuda, compiled=compiled)
    out: dict[str, Any] = r.to_dict()
    if not cuda:
        out["kernel_note"] = f"kernel not run: {device_reason(opts)}"
    out["compile_s"] = compile_s
    if compile_error:
        out["compile_error"] = compile_error
    if r.kernel_vs_copy is not None and r.speedup_vs_torch is not None:
        out["goal_kernel_vs_copy"] = r.kernel_vs_copy >= GOAL_KERNEL_VS_COPY
        out["goal_speedup_vs_unfused"] = r.speedup_vs_torch >= GOAL_SPEEDUP_VS_UNFUSED
    return out


def section_kernel_bandwidth(opts: Options, rec: Recorder) -> None:
    import torch

    from tdmi.benchmarks import plugin_bandwidth as pb

    cuda = opts.cuda
    if cuda:
        require_torch_cuda()
        from tdmi.plugins.availability import cuda_gpu_available

        cuda_gpu_available().require()
    batches = [1] if opts.quick else [1, 8, 32]
    warmup, iters = (1, 5) if opts.quick else (10, 100)
    rec.set(
        "setup",
        {
            "device": "cuda" if cuda else "cpu",
            "kernel": "shipped PTX via cuda-python" if cuda else f"not run: {device_reason(opts)}",
            "compile": "torch.compile(dynamic=False), one graph per row"
            if opts.compile_enabled
            else "skipped in the quick CPU dry run (inductor compiles take minutes on 2 cores)",
            "warmup": warmup,
            "iters": iters,
            "goals": {"kernel_vs_copy": GOAL_KERNEL_VS_COPY, "speedup_vs_unfused": GOAL_SPEEDUP_VS_UNFUSED},
        },
    )
    for dtype in ("fp32", "fp16"):
        for stage, c, h, w in pb.W48_STAGES:
            for b in batches:

                def run(dtype: str = dtype, stage: str = stage, dims: Any = (c, h, w), b: int = b) -> Any:
                    return _row(opts, dtype, stage, dims, b, (warmup, iters))

                rec.row("rows", {"stage": stage, "dtype": dtype, "batch": b}, run, need_s=3.0)
    rows = [r for r in rec.data.get("rows", []) if r.get("status") == "ok"]
    judged = [r for r in rows if "goal_kernel_vs_copy" in r]
    rec.set(
        "goals_met",
        {
            "rows_judged": len(judged),
            "kernel_vs_copy": sum(r["goal_kernel_vs_copy"] for r in judged),
            "speedup_vs_unfused": sum(r["goal_speedup_vs_unfused"] for r in judged),
        },
    )
    if cuda:
        torch.cuda.empty_cache()
