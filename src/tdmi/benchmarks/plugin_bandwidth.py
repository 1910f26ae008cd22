"""Memory bandwidth of the fused TemporalDiff kernel vs a plain copy and the unfused PyTorch ops.

TemporalDiff does no arithmetic worth counting, so the only honest figure is bandwidth: bytes that
must move (input read once + output written once) divided by time. Three things are timed in the
same run on the same GPU with CUDA events:

* ``kernel``: the shipped PTX through :func:`tdmi.plugins.launch.run_temporal_diff` (what a
  TensorRT engine embeds);
* ``copy``: a device-to-device copy moving the same number of bytes (read + write): the ceiling;
* ``torch``: slice / subtract / concatenate, the graph the ONNX export contains before fusion,
  reported as *effective* bandwidth (same minimal bytes / its time) so the ratio is its slowdown;
* ``compiled`` (``--compile``): ``torch.compile`` of those ops, the best a PyTorch user gets
  without our kernel.

:func:`measure` also runs on the CPU without the kernel (copy and PyTorch rows only), so the
GPU evidence kit (:mod:`tdmi.gpukit`) exercises this code in its CPU dry run.

Shapes: HRNet-W48 stage features of a 384x288 input (96x72 maps; stage 1 C=256, stages 2-4 C=48),
B*T = 3 (one 3-frame clip) and larger batches, FP32 and FP16.

``python -m tdmi.benchmarks.plugin_bandwidth [--batch 1 --batch 8] [--compile] [--json out.json]``; without a
CUDA GPU it exits with the reason instead of printing numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tdmi.errors import BackendUnavailableError, TdmiError
from tdmi.plugins import launch_params
from tdmi.plugins.availability import cuda_gpu_available, torch_cuda_available
from tdmi.utils import write_text_atomic

# (label, channels, h, w): W48 at 384x288 input.
W48_STAGES: tuple[tuple[str, int, int, int], ...] = (
    ("stage1", 256, 96, 72),
    ("stage2-4", 48, 96, 72),
)
DTYPES = {"fp32": "float32", "fp16": "float16"}
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Row:
    stage: str
    channels: int
    height: int
    width: int
    batch: int
    frames: int
    dtype: str
    bytes_moved: int
    kernel_us: float | None  # None: the kernel was not run (CPU rows)
    copy_us: float
    torch_us: float
    kernel_gbps: float | None
    copy_gbps: float
    torch_gbps: float
    compiled_us: float | None = None  # torch.compile of the unfused ops, when asked for
    compiled_gbps: float | None = None
    device: str = "cuda"

    @property
    def kernel_vs_copy(self) -> float | None:
        return None if self.kernel_gbps is None else self.kernel_gbps / self.copy_gbps

    @property
    def speedup_vs_torch(self) -> float | None:
        return None if self.kernel_us is None else self.torch_us / self.kernel_us

    @property
    def speedup_vs_compiled(self) -> float | None:
        if self.kernel_us is None or self.compiled_us is None:
            return None
        return self.compiled_us / self.kernel_us

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "kernel_vs_copy": self.kernel_vs_copy,
            "speedup_vs_torch": self.speedup_vs_torch,
            "speedup_vs_compiled": self.speedup_vs_compiled,
        }


def unfused_temporal_diff(x: Any, num_frames: int) -> Any:
    """The exported graph's ops: per-frame slices, subtraction, concatenation on channels."""
    import torch

    bt, c, h, w = x.shape
    x5 = x.view(bt // num_frames, num_frames, c, h, w)
    return torch.cat([x5[:, k + 1] - x5[:, k] for k in range(num_frames - 1)], dim=1)


def compile_unfused(mode: str | None = None) -> Callable[[Any, int], Any]:
    """``torch.compile`` of :func:`unfused_temporal_diff` (static shapes: one graph per shape)."""
    import torch

    return torch.compile(unfused_temporal_diff, dynamic=False, mode=mode)


def _time_us(fn: Any, warmup: int, iters: int, device: str = "cuda") -> float:
    """Mean time per call in microseconds: CUDA events around ``iters`` back-to-back calls (GPU),
    or the wall clock (CPU)."""
    import torch

    for _ in range(warmup):
        fn()
    if device == "cpu":
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t0) * 1e6 / iters
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) * 1000.0 / iters


def _check_same(got: Any, expected: Any, what: str) -> None:
    """Never time something that computes something else."""
    import torch

    if not torch.equal(got, expected):
        err = (got.float() - expected.float()).abs().max().item()
        raise TdmiError(f"{what} differs from PyTorch (max |diff| {err})")


def measure(
    stage: str,
    channels: int,
    h: int,
    w: int,
    batch: int,
    frames: int,
    dtype: str,
    warmup: int,
    iters: int,
    *,
    device: str = "cuda",
    kernel: bool = True,
    compiled: Callable[[Any, int], Any] | None = None,
) -> Row:
    """One row. ``kernel=False`` leaves the kernel out (the only way on a CPU); ``compiled`` (see
    :func:`compile_unfused`) adds a ``torch.compile`` row, checked equal to the eager ops first."""
    import torch

    if kernel and device != "cuda":
        raise ValueError("the TemporalDiff kernel runs on CUDA only: pass kernel=False on the CPU")
    tdtype = getattr(torch, DTYPES[dtype])
    shape = (batch * frames, channels, h, w)
    x = torch.randn(shape, device=device, dtype=tdtype)
    expected = unfused_temporal_diff(x, frames)
    what = f"for {stage} {shape} {dtype}"
    if kernel:
        from tdmi.plugins.launch import run_temporal_diff

        y = run_temporal_diff(x, frames)
        torch.cuda.synchronize()
        _check_same(y, expected, f"kernel output {what}")
    if compiled is not None:
        _check_same(compiled(x, frames), expected, f"torch.compile output {what}")

    moved = launch_params.bytes_moved(shape, frames, DTYPES[dtype])
    itemsize = launch_params.itemsize(DTYPES[dtype])
    n_copy = moved // (2 * itemsize)  # a copy reads and writes n elements
    src = torch.empty(n_copy, device=device, dtype=tdtype).normal_()
    dst = torch.empty_like(src)

    kernel_us = (
        _time_us(lambda: run_temporal_diff(x, frames, out=y), warmup, iters, device) if kernel else None
    )
    copy_us = _time_us(lambda: dst.copy_(src), warmup, iters, device)
    torch_us = _time_us(lambda: unfused_temporal_diff(x, frames), warmup, iters, device)
    compiled_us = (
        _time_us(lambda: compiled(x, frames), warmup, iters, device) if compiled is not None else None
    )
    copy_bytes = 2 * n_copy * itemsize
    return Row(
        stage=stage,
        channels=channels,
        height=h,
        width=w,
        batch=batch,
        frames=frames,
        dtype=dtype,
        bytes_moved=moved,
        kernel_us=kernel_us,
        copy_us=copy_us,
        torch_us=torch_us,
        kernel_gbps=None if kernel_us is None else moved / kernel_us / 1e3,
        copy_gbps=copy_bytes / copy_us / 1e3,
        torch_gbps=moved / torch_us / 1e3,
        compiled_us=compiled_us,
        compiled_gbps=None if compiled_us is None else moved / compiled_us / 1e3,
        device=device,
    )


def run_benchmark(
    batches: list[int], frames: int, dtypes: list[str], warmup: int, iters: int, compile_ops: bool = False
) -> tuple[list[Row], dict[str, Any]]:
    """All rows plus a description of the machine; raises BackendUnavailableError without a GPU."""
    torch_cuda_available().require()
    cuda_gpu_available().require()
    import torch

    from tdmi.plugins.launch import load_module

    device = torch.cuda.current_device()
    module = load_module(device)
    compiled = compile_unfused() if compile_ops else None
    rows = [
        measure(stage, c, h, w, b, frames, dt, warmup, iters, compiled=compiled)
        for dt in dtypes
        for stage, c, h, w in W48_STAGES
        for b in batches
    ]
    props = torch.cuda.get_device_properties(device)
    info = {
        "device": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "ptx_arch": f"compute_{module.arch}",
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "python": platform.python_version(),
        "warmup": warmup,
        "iters": iters,
    }
    return rows, info


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def render(rows: list[Row], info: dict[str, Any]) -> Table:
    table = Table(
        title=f"TemporalDiff bandwidth on {info['device']} (sm_{info['compute_capability']}, "
        f"{info['ptx_arch']} PTX), {info['iters']} iters"
    )
    for col in (
        "stage",
        "C",
        "B*T",
        "dtype",
        "MB moved",
        "kernel µs",
        "kernel GB/s",
        "copy GB/s",
        "torch µs",
        "torch GB/s",
        "kernel/copy",
        "vs torch",
        "compiled GB/s",
        "vs compiled",
    ):
        table.add_column(col, justify="left" if col in ("stage", "dtype") else "right")
    for r in rows:
        table.add_row(
            r.stage,
            str(r.channels),
            str(r.batch * r.frames),
            r.dtype,
            f"{r.bytes_moved / 1e6:.1f}",
            _fmt(r.kernel_us, "{:.1f}"),
            _fmt(r.kernel_gbps, "{:.0f}"),
            f"{r.copy_gbps:.0f}",
            f"{r.torch_us:.1f}",
            f"{r.torch_gbps:.0f}",
            _fmt(None if r.kernel_vs_copy is None else 100 * r.kernel_vs_copy, "{:.0f}%"),
            _fmt(r.speedup_vs_torch, "{:.2f}x"),
            _fmt(r.compiled_gbps, "{:.0f}"),
            _fmt(r.speedup_vs_compiled, "{:.2f}x"),
        )
    return table


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tdmi.benchmarks.plugin_bandwidth", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--batch", type=int, action="append", help="clips per batch (repeatable; 1 8 32)")
    parser.add_argument("--frames", type=int, default=3, help="frames per clip T (default 3)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), action="append", help="repeatable; default both")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the unfused ops")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--json", dest="json_out", type=Path, default=None, help="also write results here")
    parser.add_argument("--verbose", "-v", action="store_true", help="traceback on error")
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error("--frames must be >= 2")
    if args.iters < 1 or args.warmup < 0 or any(b < 1 for b in args.batch or []):
        parser.error("--iters >= 1, --warmup >= 0 and --batch >= 1 are required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        rows, info = run_benchmark(
            args.batch or [1, 8, 32],
            args.frames,
            args.dtype or ["fp32", "fp16"],
            args.warmup,
            args.iters,
            compile_ops=args.compile,
        )
        console.print(render(rows, info))
        if args.json_out is not None:
            payload = {
                "benchmark": "temporal_diff_bandwidth",
                "machine": info,
                "rows": [r.to_dict() for r in rows],
            }
            write_text_atomic(args.json_out, json.dumps(payload, indent=2) + "\n")
            console.print(f"wrote {args.json_out}")
    except BackendUnavailableError as exc:
        if args.verbose:
            traceback.print_exc()
        err_console.print(f"error: plugin bandwidth benchmark needs a CUDA GPU: {exc}")
        return 1
    except TdmiError as exc:
        if args.verbose:
            traceback.print_exc()
        err_console.print(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
