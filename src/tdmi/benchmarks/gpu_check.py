"""GPU evidence in one command: what a CPU cannot show, measured on a bare, borrowed GPU machine.

``python -m tdmi.benchmarks.gpu_check --json out/gpu.json --md out/gpu.md`` (or ``tdmi-bench gpu``)
runs six independent sections and records each one's status and figures:

1. ``environment``: GPU, compute capability, memory, driver, CUDA runtime, package versions, clocks;
2. ``kernel_correctness``: the shipped TemporalDiff PTX through cuda-python (the plugins' launcher)
   and through cupy, bit for bit against PyTorch, FP32/FP16, T = 2/3/5, (mis)aligned pointers,
   planes that are not a multiple of the vector width, an empty batch, B up to 64 at W48 sizes;
3. ``kernel_bandwidth``: :mod:`tdmi.benchmarks.plugin_bandwidth` rows (kernel vs copy vs the
   unfused ops vs ``torch.compile`` of them) with the goals (>= 90 % of copy, >= 2x unfused);
4. ``torch_latency``: TDMI-W48 384x288 T=3 (random weights) in eager FP32/FP16, channels_last,
   CUDA graphs and ``torch.compile`` (default, max-autotune without CUDA graphs) at batch 1/8/32;
5. ``dcn_forms``: ``torchvision.ops.deform_conv2d`` against the decomposed GridSample form;
6. ``ort_cpu``: ONNX Runtime on this machine's CPU (FP32, batch 1), beside PyTorch CPU.

Made for the machine it runs on: a fixed image (torch, torchvision, numpy, onnx, onnxruntime CPU,
onnxscript, cupy, cuda-python, typer, rich; no TensorRT, OpenCV, matplotlib, pytest), a plain
checkout with ``PYTHONPATH=src``, minutes of lease. So every section runs in its own worker process
(a CUDA fault or a hung compile cannot take the next section with it) under a per-section timeout
and a global time limit (the cheap sections run first, the latency section with its compiles
last), and the JSON / Markdown reports are rewritten after every section; a worker writes its
partial result after every row, so a section stopped by the time guard keeps what it measured.
``--device cpu --quick`` is the dry run CI executes: every section at toy sizes, the GPU-only parts
skipped with their reason. A section is ``ok`` only when the subject its title names ran
(:data:`SUBJECTS`, judged by :mod:`tdmi.checks`): on a CPU the PTX sections are ``skipped`` although
the PyTorch reference ran, and a section that ran part of its rows is ``partial`` with the counts.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tdmi.checks import Tally, judge, tally
from tdmi.errors import TdmiError
from tdmi.utils import source_commit, write_text_atomic

SECTIONS: tuple[str, ...] = (
    "environment",
    "kernel_correctness",
    "kernel_bandwidth",
    "torch_latency",
    "dcn_forms",
    "ort_cpu",
)
TITLES: dict[str, str] = {
    "environment": "1. Environment",
    "kernel_correctness": "2. TemporalDiff kernel correctness (shipped PTX vs PyTorch, bit-exact)",
    "kernel_bandwidth": "3. TemporalDiff kernel bandwidth",
    "torch_latency": "4. End-to-end PyTorch latency",
    "dcn_forms": "5. DCN forms (torchvision deform_conv2d vs decomposed GridSample)",
    "ort_cpu": "6. ONNX Runtime CPU on the same machine (FP32, batch 1)",
}
# Cheap sections first; the PyTorch latency section (compiles) takes whatever time is left.
RUN_ORDER: tuple[str, ...] = (
    "environment",
    "kernel_correctness",
    "kernel_bandwidth",
    "dcn_forms",
    "ort_cpu",
    "torch_latency",
)
# ok: everything of the section's subject ran; partial: some of it was skipped, failed in a row or was
# cut by the time guard (the reason says how much ran); skipped: nothing of the subject ran here (with
# the reason); failed: an error or a wrong result; timeout: the worker was stopped.
STATUSES: tuple[str, ...] = ("ok", "partial", "skipped", "failed", "timeout", "not_run")
# The packages of the GPU image this kit is written for (the CPU dry run blocks everything else).
IMAGE_PACKAGES: tuple[str, ...] = (
    "torch",
    "torchvision",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "cupy-cuda13x",
    "cuda-bindings",
    "cuda-python",
    "typer",
    "rich",
)
DEFAULT_TIME_LIMIT_S = 330.0  # 5.5 min: inside the 6-minute goal with start-up to spare
# Longest any one section may run (seconds); the global limit still bounds the sum.
SECTION_CAPS_S: dict[str, float] = {
    "environment": 30,
    "kernel_correctness": 60,
    "kernel_bandwidth": 75,
    "torch_latency": 240,
    "dcn_forms": 40,
    "ort_cpu": 90,
}
RESERVE_PER_LATER_SECTION_S = 8.0  # what each later section keeps of the global limit
SOFT_MARGIN_S = 4.0  # a worker stops starting rows this long before it would be killed
GOAL_KERNEL_VS_COPY = 0.9
GOAL_SPEEDUP_VS_UNFUSED = 2.0
W48_PRESET = "tdmi-w48-384x288"
TOY_PRESET = "tdmi-tiny"
DCN_IMPORT = "tdmi.model.dcn.deform_conv2d_decomposed"


@dataclass(frozen=True)
class Options:
    device: str = "cuda"  # "cuda" or "cpu"
    quick: bool = False  # toy sizes, few iterations (the CI dry run)
    seed: int = 0

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def compile_enabled(self) -> bool:
        """torch.compile costs minutes of inductor work on a 2-core CPU: not in the quick CPU run."""
        return self.cuda or not self.quick


class SectionSkipped(Exception):
    """The whole section has nothing to run on this machine; the message says why."""


class TimeGuard(Exception):
    """The section ran out of its time budget; what it measured so far is kept."""


class Recorder:
    """A section's result, written to disk after every row so a killed worker still leaves data."""

    def __init__(self, path: Path | None, deadline: float) -> None:
        self.path = path
        self.deadline = deadline  # time.time() after which no new row starts
        self.data: dict[str, Any] = {"status": "ok", "reason": "", "notes": []}
        self.flush()

    def flush(self) -> None:
        if self.path is not None:
            write_text_atomic(self.path, json.dumps(self.data, default=_json_default) + "\n")

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.flush()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.flush()

    def time_left(self) -> float:
        return self.deadline - time.time()

    def degrade(self, reason: str) -> None:
        """Mark the section partial (unless it already failed) and say why."""
        if self.data["status"] == "ok":
            self.data["status"] = "partial"
        if reason and reason not in self.data["reason"]:
            self.data["reason"] = "; ".join(r for r in (self.data["reason"], reason) if r)
        self.flush()

    def fail(self, reason: str) -> None:
        self.data["status"] = "failed"
        self.data["reason"] = "; ".join(r for r in (self.data["reason"], reason) if r)
        self.flush()

    def row(
        self, table: str, base: dict[str, Any], fn: Callable[[], dict[str, Any]], need_s: float = 0.0
    ) -> dict[str, Any]:
        """Run one row: its figures, or its skip reason, or its error, never an exception."""
        row = dict(base)
        rows = self.data.setdefault(table, [])
        if self.time_left() < need_s:
            row.update(status="not_run", reason=f"time guard: {max(self.time_left(), 0):.0f} s left")
            rows.append(row)
            self.degrade("rows left out by the time guard")
            return row
        t0 = time.perf_counter()
        try:
            row.update(fn())
            row.setdefault("status", "ok")
        except SectionSkipped as e:
            row.update(status="skipped", reason=str(e))
        except Exception as e:
            row.update(status="failed", error=_one_line(e))
            self.degrade(f"{table}: {sum(r.get('status') == 'failed' for r in rows) + 1} row(s) failed")
        row["seconds"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
        self.flush()
        return row


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:400] if text else ''}".rstrip(": ")


# -------------------------------------------------------------------------------------- helpers


def _sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def _percentiles(times_s: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(times_s) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()),
        "iters": len(times_s),
    }


def _time_calls(fn: Callable[[], Any], cuda: bool, warmup: int, iters: int, max_s: float) -> dict[str, float]:
    """Per-call latency as a caller sees it (synchronised), at most ``max_s`` of timed calls."""
    for _ in range(warmup):
        fn()
    _sync(cuda)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < iters and (len(times) < 3 or time.perf_counter() - started < max_s):
        t0 = time.perf_counter()
        fn()
        _sync(cuda)
        times.append(time.perf_counter() - t0)
    return _percentiles(times)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@contextlib.contextmanager
def _strict_fp32() -> Iterator[None]:
    """TF32 off, as the project's PyTorch reference: FP32 figures are FP32."""
    import torch

    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def _require_torch_cuda() -> None:
    from tdmi.plugins.availability import torch_cuda_available

    avail = torch_cuda_available()
    if not avail:
        raise SectionSkipped(avail.reason)


def _device_reason(opts: Options) -> str:
    """Why a GPU-only part does not run here."""
    if not opts.cuda:
        return "needs a CUDA GPU (--device cpu)"
    from tdmi.plugins.availability import torch_cuda_available

    return torch_cuda_available().reason


# ---------------------------------------------------------------------------------- 1. environment


def section_environment(opts: Options, rec: Recorder) -> None:
    import torch

    rec.set(
        "host",
        {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
        },
    )
    rec.set("packages", {d: _version(d) for d in (*IMAGE_PACKAGES, "tdmi-deploy")})
    rec.set(
        "torch",
        {
            "version": torch.__version__,
            "cuda_build": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "threads": torch.get_num_threads(),
            "cuda_available": torch.cuda.is_available(),
        },
    )
    rec.set("git_commit", source_commit(short=True))
    if not opts.cuda:
        rec.set("gpu", {"available": False, "reason": _device_reason(opts)})
        return
    if not torch.cuda.is_available():
        rec.set("gpu", {"available": False, "reason": _device_reason(opts)})
        rec.fail(f"--device cuda but {_device_reason(opts)}")
        return
    dev = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(dev)
    gpu: dict[str, Any] = {
        "available": True,
        "count": torch.cuda.device_count(),
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 2),
        "multiprocessors": props.multi_processor_count,
    }
    rec.set("gpu", gpu)
    from tdmi.plugins import ptx

    with contextlib.suppress(Exception):
        gpu["ptx_selected"] = f"compute_{ptx.select_arch((props.major, props.minor))}"
    gpu.update(_driver_info(dev))
    gpu.update(_cupy_info())
    gpu["nvidia_smi"] = _nvidia_smi()
    rec.set("gpu", gpu)


def _driver_info(dev: int) -> dict[str, Any]:
    """Driver version and clocks from the driver API (cuda-python); each field only if readable."""
    info: dict[str, Any] = {"cuda_python": _version("cuda-bindings") or _version("cuda-python")}
    try:
        from cuda.bindings import driver
    except ImportError as e:
        info["driver_error"] = _one_line(e)
        return info
    try:
        driver.cuInit(0)
        err, ver = driver.cuDriverGetVersion()
        if err == driver.CUresult.CUDA_SUCCESS:
            info["driver_cuda_version"] = f"{ver // 1000}.{ver % 1000 // 10}"
        err, cu_dev = driver.cuDeviceGet(dev)
        attrs = driver.CUdevice_attribute
        for key, name in (
            ("sm_clock_mhz", "CU_DEVICE_ATTRIBUTE_CLOCK_RATE"),
            ("memory_clock_mhz", "CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE"),
            ("memory_bus_bits", "CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH"),
            ("l2_bytes", "CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE"),
        ):
            attr = getattr(attrs, name, None)
            if attr is None:
                continue
            err, value = driver.cuDeviceGetAttribute(attr, cu_dev)
            if err == driver.CUresult.CUDA_SUCCESS:
                info[key] = value // 1000 if key.endswith("_mhz") else value
    except Exception as e:  # the environment section reports, it does not fail
        info["driver_error"] = _one_line(e)
    return info


def _cupy_info() -> dict[str, Any]:
    try:
        import cupy
    except ImportError as e:
        return {"cupy": None, "cupy_error": _one_line(e)}
    try:
        rt = cupy.cuda.runtime.runtimeGetVersion()
        return {"cupy": cupy.__version__, "cupy_cuda_runtime": f"{rt // 1000}.{rt % 1000 // 10}"}
    except Exception as e:
        return {"cupy": cupy.__version__, "cupy_error": _one_line(e)}


def _nvidia_smi() -> dict[str, str] | str:
    fields = (
        "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,"
        "temperature.gpu,persistence_mode,mig.mode.current"
    )
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"not readable: {_one_line(e)}"
    if out.returncode != 0:
        return f"not readable: exit {out.returncode}"
    first = out.stdout.strip().splitlines()[:1]
    values = [v.strip() for v in first[0].split(",")] if first else []
    return dict(zip(fields.split(","), values, strict=False))


# -------------------------------------------------------------------------- 2. kernel correctness

# (label, B, T, C, h, w): every launch-path corner the kernel has.
CORRECTNESS_CASES: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("T=2, vector plane", 2, 2, 8, 16, 16),
    ("T=3, vector plane", 2, 3, 8, 16, 16),
    ("T=5, vector plane", 2, 5, 8, 16, 16),
    ("T=3, plane 105 (no vector width divides it)", 2, 3, 3, 5, 7),
    ("T=3, plane 12 (FP32 vector, FP16 scalar)", 2, 3, 2, 3, 2),
    ("T=5, one element per frame", 3, 5, 1, 1, 1),
    ("empty batch (B=0)", 0, 3, 48, 96, 72),
    ("W48 stage 1, B=1", 1, 3, 256, 96, 72),
    ("W48 stages 2-4, B=1", 1, 3, 48, 96, 72),
    ("W48 stages 2-4, T=5, B=8", 8, 5, 48, 96, 72),
    ("W48 stage 1, B=64", 64, 3, 256, 96, 72),
    ("W48 stages 2-4, B=64", 64, 3, 48, 96, 72),
)
QUICK_MAX_ELEMENTS = 6_000_000  # --quick keeps the cases up to one W48 stage-1 clip
NUMPY_CHECK_MAX_ELEMENTS = 20_000_000  # the numpy cross-check of the PyTorch reference, when cheap
# Pointer offsets in elements: input / output 16-byte aligned, or one element off.
ALIGNMENTS: dict[str, tuple[int, int]] = {"aligned": (0, 0), "input+1": (1, 0), "output+1": (0, 1)}


def _case_list(opts: Options) -> list[tuple[str, int, int, int, int, int, str]]:
    cases = []
    for label, b, t, c, h, w in CORRECTNESS_CASES:
        if opts.quick and b * t * c * h * w > QUICK_MAX_ELEMENTS:
            continue
        big = b * t * c * h * w > 4_000_000
        for align in ALIGNMENTS if not big else ("aligned",):
            cases.append((label, b, t, c, h, w, align))
    return cases


def _offset_tensor(shape: tuple[int, ...], offset: int, dtype: Any, device: str) -> Any:
    """A contiguous tensor of ``shape`` starting ``offset`` elements into a fresh allocation."""
    import torch

    n = 1
    for d in shape:
        n *= d
    buf = torch.empty(n + offset, dtype=dtype, device=device)
    return buf[offset : offset + n].view(shape)


def _bit_diff(got: Any, want: Any) -> dict[str, Any]:
    """Bitwise comparison (so -0.0 vs 0.0 or NaN payloads count) and the largest value gap."""
    import torch

    as_int = torch.int32 if got.dtype == torch.float32 else torch.int16
    if got.shape != want.shape or got.dtype != want.dtype:
        return {"bit_exact": False, "mismatches": -1, "max_abs_diff": None}
    mismatches = int((got.view(as_int) != want.view(as_int)).sum().item()) if got.numel() else 0
    max_abs = float((got.float() - want.float()).abs().max().item()) if got.numel() else 0.0
    return {"bit_exact": mismatches == 0, "mismatches": mismatches, "max_abs_diff": max_abs}


class _CupyLauncher:
    """The shipped PTX loaded and launched by cupy: a second, independent launch path."""

    def __init__(self, device: int) -> None:
        import cupy

        from tdmi.plugins import ptx
        from tdmi.plugins.availability import compute_capability

        self.cupy = cupy
        self.arch = ptx.select_arch(compute_capability(device))
        with cupy.cuda.Device(device):
            self.module = cupy.RawModule(path=str(ptx.ptx_path(self.arch)))

    def __call__(self, x: Any, out: Any, num_frames: int) -> None:
        import numpy as np

        from tdmi.plugins import launch_params

        config = launch_params.launch_config(tuple(x.shape), num_frames, x.dtype)
        if config.grid[0] == 0:  # nothing to do: CUDA rejects an empty grid
            return
        fn = self.module.get_function(config.kernel)
        xc, yc = self.cupy.asarray(x), self.cupy.asarray(out)
        fn(config.grid, config.block, (xc, *(np.int32(v) for v in config.scalar_args), yc))
        self.cupy.cuda.get_current_stream().synchronize()


def section_kernel_correctness(opts: Options, rec: Recorder) -> None:
    import numpy as np
    import torch

    from tdmi.benchmarks.plugin_bandwidth import unfused_temporal_diff
    from tdmi.plugins import launch_params
    from tdmi.plugins.temporal_diff import temporal_diff_reference

    device = "cuda" if opts.cuda and torch.cuda.is_available() else "cpu"
    gpu_reason = "" if device == "cuda" else _device_reason(opts)
    launchers: dict[str, Callable[[Any, Any, int], None] | str] = {}
    if device == "cuda":
        from tdmi.plugins.launch import load_module, run_temporal_diff

        try:
            rec.set("ptx_arch", f"compute_{load_module(torch.cuda.current_device()).arch}")
            launchers["cuda-python"] = lambda x, out, t: run_temporal_diff(x, t, out=out)
        except Exception as e:
            launchers["cuda-python"] = _one_line(e)
        try:
            launchers["cupy"] = _CupyLauncher(torch.cuda.current_device())
        except Exception as e:
            launchers["cupy"] = _one_line(e)
    else:
        launchers = {"cuda-python": gpu_reason, "cupy": gpu_reason}
    rec.set("paths", {k: "ok" if callable(v) else v for k, v in launchers.items()})

    gen = torch.Generator(device=device).manual_seed(opts.seed)
    for label, b, t, c, h, w, align in _case_list(opts):
        for dtype_name in ("float32", "float16"):
            dtype = getattr(torch, dtype_name)
            shape = (b * t, c, h, w)
            x_off, y_off = ALIGNMENTS[align]
            base = {"case": label, "dtype": dtype_name, "shape": list(shape), "frames": t, "align": align}

            x = _offset_tensor(shape, x_off, dtype, device)
            x.copy_(torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype))
            want = unfused_temporal_diff(x, t)

            def reference_check(x: Any = x, want: Any = want, t: int = t) -> dict[str, Any]:
                """The PyTorch reference itself, against the numpy one (correctly rounded FP16)."""
                if x.numel() > NUMPY_CHECK_MAX_ELEMENTS:
                    raise SectionSkipped(f"numpy cross-check only up to {NUMPY_CHECK_MAX_ELEMENTS} elements")
                host = x.cpu().numpy()
                if host.dtype == np.float16:
                    ref = temporal_diff_reference(host.astype(np.float64), t).astype(np.float16)
                else:
                    ref = temporal_diff_reference(host, t)
                out = _bit_diff(want.cpu(), torch.from_numpy(ref))
                if not out["bit_exact"]:
                    raise TdmiError(f"PyTorch and numpy disagree in {out['mismatches']} elements")
                return out

            if rec.row("cases", {**base, "path": "torch-vs-numpy"}, reference_check)["status"] == "failed":
                rec.fail("the PyTorch reference disagrees with numpy (see cases)")
            for path, launcher in launchers.items():
                if not callable(launcher):
                    rec.row("cases", {**base, "path": path}, _skip(launcher))
                    continue

                def run(
                    launcher: Any = launcher, x: Any = x, want: Any = want, t: int = t, y_off: int = y_off
                ) -> dict[str, Any]:
                    out = _offset_tensor(tuple(want.shape), y_off, x.dtype, device).fill_(float("nan"))
                    config = launch_params.launch_config(tuple(x.shape), t, x.dtype)
                    launcher(x, out, t)
                    torch.cuda.synchronize()
                    result = _bit_diff(out, want)
                    result.update(
                        grid=config.grid[0],
                        vector_path=launch_params.uses_vector_path(
                            config.plane, x.dtype, x.data_ptr(), out.data_ptr()
                        ),
                    )
                    if not result["bit_exact"]:
                        result["status"] = "failed"
                        result["error"] = f"{result['mismatches']} elements differ from PyTorch"
                    return result

                row = rec.row("cases", {**base, "path": path}, run, need_s=1.0)
                if row.get("status") == "failed":
                    rec.fail("the kernel disagrees with PyTorch (see cases)")
            del x, want
    cases = rec.data.get("cases", [])
    summary = {
        path: {
            "run": sum(r["path"] == path and r["status"] in ("ok", "failed") for r in cases),
            "bit_exact": sum(r["path"] == path and r.get("bit_exact") is True for r in cases),
            "skipped": sum(r["path"] == path and r["status"] == "skipped" for r in cases),
        }
        for path in ("torch-vs-numpy", "cuda-python", "cupy")
    }
    rec.set("summary", summary)
    if device == "cuda":
        torch.cuda.empty_cache()


def _skip(reason: str) -> Callable[[], dict[str, Any]]:
    def fn() -> dict[str, Any]:
        raise SectionSkipped(reason)

    return fn


# ---------------------------------------------------------------------------- 3. kernel bandwidth


def section_kernel_bandwidth(opts: Options, rec: Recorder) -> None:
    import torch

    from tdmi.benchmarks import plugin_bandwidth as pb

    cuda = opts.cuda
    if cuda:
        _require_torch_cuda()
        from tdmi.plugins.availability import cuda_gpu_available

        cuda_gpu_available().require()
    device = "cuda" if cuda else "cpu"
    batches = [1] if opts.quick else [1, 8, 32]
    warmup, iters = (1, 5) if opts.quick else (10, 100)
    rec.set(
        "setup",
        {
            "device": device,
            "kernel": "shipped PTX via cuda-python" if cuda else f"not run: {_device_reason(opts)}",
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

                def run(
                    dtype: str = dtype, stage: str = stage, c: int = c, h: int = h, w: int = w, b: int = b
                ) -> dict[str, Any]:
                    compiled, compile_s, compile_error = None, None, None
                    if opts.compile_enabled:
                        try:
                            torch._dynamo.reset()  # one static graph per row, never the recompile limit
                            compiled = pb.compile_unfused()
                            probe = torch.randn(
                                (b * 3, c, h, w), device=device, dtype=getattr(torch, pb.DTYPES[dtype])
                            )
                            t0 = time.perf_counter()
                            compiled(probe, 3)
                            _sync(cuda)
                            compile_s = time.perf_counter() - t0
                            del probe
                        except Exception as e:
                            compiled, compile_error = None, _one_line(e)
                    r = pb.measure(
                        stage,
                        c,
                        h,
                        w,
                        b,
                        3,
                        dtype,
                        warmup,
                        iters,
                        device=device,
                        kernel=cuda,
                        compiled=compiled,
                    )
                    out = r.to_dict()
                    if not cuda:
                        out["kernel_note"] = f"kernel not run: {_device_reason(opts)}"
                    out["compile_s"] = compile_s
                    if compile_error:
                        out["compile_error"] = compile_error
                    if r.kernel_vs_copy is not None and r.speedup_vs_torch is not None:
                        out["goal_kernel_vs_copy"] = r.kernel_vs_copy >= GOAL_KERNEL_VS_COPY
                        out["goal_speedup_vs_unfused"] = r.speedup_vs_torch >= GOAL_SPEEDUP_VS_UNFUSED
                    return out

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


# ------------------------------------------------------------------------------- 4. torch latency


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


def section_torch_latency(opts: Options, rec: Recorder) -> None:
    import numpy as np
    import torch

    from tdmi.export.onnx_export import compare_heatmaps
    from tdmi.model import TDMI, get_preset

    cuda = opts.cuda
    if cuda:
        _require_torch_cuda()
    device = "cuda" if cuda else "cpu"
    cfg = get_preset(TOY_PRESET if opts.quick else W48_PRESET)
    batches = [1, 2] if opts.quick else [1, 8, 32]
    warmup, iters, max_s = (0, 2, 1.0) if opts.quick else (3, 20, 4.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        model = TDMI(cfg).eval().to(device)
    rec.set(
        "setup",
        {
            "config": cfg.name,
            "input": ["B", cfg.num_frames, 3, *cfg.input_size],
            "weights": f"random (seed {opts.seed})",
            "device": device,
            "batches": batches,
            "warmup": warmup,
            "iters": iters,
            "reference": "eager FP32 with TF32 off (the project's strict reference)",
            "timing": "per call, synchronised wall clock (what a caller waits)",
            "peak_memory": "this variant's weights + peak allocated during its calls beyond what was "
            "resident before (activations, workspaces, CUDA graph pool)",
        },
    )
    gen = torch.Generator().manual_seed(opts.seed + 1)
    inputs = {b: torch.randn((b, cfg.num_frames, 3, *cfg.input_size), generator=gen) for b in batches}
    refs: dict[int, np.ndarray] = {}
    for b in batches:

        def reference(b: int = b) -> dict[str, Any]:
            with _strict_fp32(), torch.inference_mode():
                refs[b] = model(inputs[b].to(device)).float().cpu().numpy()
            return {"finite": bool(np.isfinite(refs[b]).all())}

        rec.row("references", {"batch": b}, reference, need_s=2.0)
    for v in LATENCY_VARIANTS:
        base = {
            "variant": v.name,
            "dtype": v.dtype,
            "channels_last": v.channels_last,
            "mode": v.mode,
        }
        reason = _variant_skip_reason(v, opts, cuda)
        if reason:
            for b in batches:
                rec.row("rows", {**base, "batch": b}, _skip(reason))
            continue
        need = LATENCY_NEED_S.get(v.mode, LATENCY_NEED_DEFAULT_S) if not opts.quick else 1.0
        if rec.time_left() < need:
            for b in batches:
                rec.row("rows", {**base, "batch": b}, lambda: {}, need_s=need)
            continue
        try:
            m = _prepare_variant(model, v)
        except Exception as e:
            for b in batches:
                rec.row("rows", {**base, "batch": b}, _raise(e))
            continue
        for b in batches:

            def run(b: int = b, m: Any = m, v: LatencyVariant = v) -> dict[str, Any]:
                dtype = torch.float16 if v.dtype == "fp16" else torch.float32
                x = inputs[b].to(device=device, dtype=dtype)
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                    resident = torch.cuda.memory_allocated()
                ctx = _strict_fp32() if v.dtype == "fp32" else contextlib.nullcontext()
                with ctx, torch.inference_mode():
                    t0 = time.perf_counter()
                    if v.mode == "cudagraph":
                        fn = _cuda_graph_runner(m, x)
                        y = fn(x)
                    else:
                        fn = m
                        y = m(x)
                    _sync(cuda)
                    first_call_s = time.perf_counter() - t0
                    out: dict[str, Any] = {"first_call_s": round(first_call_s, 3)}
                    out.update(_time_calls(lambda: fn(x), cuda, warmup, iters, max_s))
                out["clips_per_s"] = b / (out["p50_ms"] / 1e3)
                if cuda:
                    run_peak = torch.cuda.max_memory_allocated() - resident
                    out["peak_mem_mib"] = round((run_peak + _weight_bytes(m)) / 2**20, 1)
                if b in refs:
                    err = compare_heatmaps(refs[b], y.float().cpu().numpy())
                    out.update(
                        heatmap_max_abs=err.max_abs,
                        heatmap_max_rel=err.max_rel,
                        keypoint_agreement=err.keypoint_agreement,
                        finite=err.finite,
                    )
                return out

            step_need = need if v.mode not in ("eager",) else (1.0 if opts.quick else 3.0)
            rec.row("rows", {**base, "batch": b}, run, need_s=step_need)
        del m
        if cuda:
            torch.cuda.empty_cache()
    _speedups(rec)


def _weight_bytes(m: Any) -> int:
    return sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers()))


def _raise(exc: Exception) -> Callable[[], dict[str, Any]]:
    def fn() -> dict[str, Any]:
        raise exc

    return fn


def _speedups(rec: Recorder) -> None:
    """Each row's speed-up over eager FP32 at the same batch (same run, same inputs)."""
    rows = rec.data.get("rows", [])
    base = {r["batch"]: r["p50_ms"] for r in rows if r["variant"] == "eager-fp32" and r["status"] == "ok"}
    for r in rows:
        if r["status"] == "ok" and r["batch"] in base:
            r["speedup_vs_eager_fp32"] = base[r["batch"]] / r["p50_ms"]
    rec.flush()


# ----------------------------------------------------------------------------------- 5. DCN forms


def load_decomposed_dcn() -> Callable[..., Any]:
    """The decomposed (GridSample) DCN, if this checkout has it; SectionSkipped says why not."""
    try:
        from tdmi.model.dcn import deform_conv2d_decomposed  # type: ignore[import-not-found]
    except ImportError as e:
        raise SectionSkipped(f"{DCN_IMPORT} is not available in this checkout ({_one_line(e)})") from None
    return deform_conv2d_decomposed  # type: ignore[no-any-return]


def section_dcn_forms(opts: Options, rec: Recorder, decomposed: Callable[..., Any] | None = None) -> None:
    fn = decomposed if decomposed is not None else load_decomposed_dcn()
    import torch
    from torchvision.ops import deform_conv2d

    from tdmi.model import get_preset

    cuda = opts.cuda
    if cuda:
        _require_torch_cuda()
    device = "cuda" if cuda else "cpu"
    cfg = get_preset(TOY_PRESET if opts.quick else W48_PRESET)
    c, k = cfg.resolved_motion_channels, cfg.dcn_kernel
    h, w = cfg.heatmap_size
    batches = [1, 2] if opts.quick else [1, 8, 32]
    dtypes = ["fp32", "fp16"] if cuda else ["fp32"]
    warmup, iters, max_s = (1, 3, 1.0) if opts.quick else (3, 30, 2.0)
    rec.set(
        "setup",
        {
            "config": cfg.name,
            "channels": c,
            "kernel": k,
            "feature": [h, w],
            "offset_groups": cfg.dcn_offset_groups,
            "offsets": "N(0, 2 px), mask sigmoid(N(0, 1))",
            "reference": "torchvision.ops.deform_conv2d in FP32",
        },
    )
    pad = (k // 2, k // 2)
    for b in batches:
        gen = torch.Generator().manual_seed(opts.seed + b)
        og = cfg.dcn_offset_groups
        x32 = torch.randn((b, c, h, w), generator=gen).to(device)
        off32 = (2 * torch.randn((b, 2 * og * k * k, h, w), generator=gen)).to(device)
        mask32 = torch.sigmoid(torch.randn((b, og * k * k, h, w), generator=gen)).to(device)
        w32 = (torch.randn((c, c, k, k), generator=gen) / (c * k * k) ** 0.5).to(device)
        b32 = (0.1 * torch.randn(c, generator=gen)).to(device)
        with _strict_fp32(), torch.inference_mode():
            ref = deform_conv2d(x32, off32, w32, b32, padding=pad, mask=mask32)
        scale = float(ref.abs().max())
        for dt in dtypes:
            tdt = torch.float16 if dt == "fp16" else torch.float32
            args = [t.to(tdt) for t in (x32, off32, w32, b32, mask32)]
            for form in ("torchvision", "decomposed"):

                def run(
                    form: str = form,
                    args: list[Any] = args,
                    dt: str = dt,
                    ref: Any = ref,
                    scale: float = scale,
                ) -> dict[str, Any]:
                    x, off, wt, bias, mask = args

                    def call() -> Any:
                        if form == "torchvision":
                            return deform_conv2d(x, off, wt, bias, padding=pad, mask=mask)
                        return fn(x, off, wt, bias, stride=(1, 1), padding=pad, dilation=(1, 1), mask=mask)

                    ctx = _strict_fp32() if dt == "fp32" else contextlib.nullcontext()
                    with ctx, torch.inference_mode():
                        y = call()
                        out = _time_calls(call, cuda, warmup, iters, max_s)
                    err = (y.float() - ref).abs().max().item()
                    out.update(max_abs_err=err, max_rel_err=err / scale if scale else None)
                    return out

                rec.row("rows", {"batch": b, "dtype": dt, "form": form}, run, need_s=1.0)
    rows = rec.data.get("rows", [])
    times = {(r["batch"], r["dtype"], r["form"]): r.get("p50_ms") for r in rows if r["status"] == "ok"}
    for r in rows:
        tv = times.get((r["batch"], r["dtype"], "torchvision"))
        if r["status"] == "ok" and tv:
            r["time_vs_torchvision"] = r["p50_ms"] / tv
    rec.flush()


# ------------------------------------------------------------------------------------- 6. ORT CPU


def section_ort_cpu(opts: Options, rec: Recorder) -> None:
    import importlib.util

    import numpy as np
    import torch

    from tdmi.export.onnx_export import build_onnx, compare_heatmaps
    from tdmi.export.ort_ops import make_session
    from tdmi.model import TDMI, get_preset
    from tdmi.plugins.availability import require_onnxruntime

    ort = require_onnxruntime()
    cfg = get_preset(TOY_PRESET if opts.quick else W48_PRESET)
    warmup, iters = (0, 2) if opts.quick else (2, 10)
    simplify = importlib.util.find_spec("onnxslim") is not None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        model = TDMI(cfg).eval()
    clip = np.random.default_rng(opts.seed).standard_normal((1, cfg.num_frames, 3, *cfg.input_size))
    clip = clip.astype(np.float32)
    rec.set(
        "setup",
        {
            "config": cfg.name,
            "weights": f"random (seed {opts.seed})",
            "onnxruntime": ort.__version__,
            "simplified": simplify,
            "simplify_note": "" if simplify else "onnxslim absent: the graph is not simplified",
            "torch_threads": torch.get_num_threads(),
            "timing": "ORT (worker spinning off) and PyTorch eager FP32 calls interleaved, same input",
        },
    )
    t0 = time.perf_counter()
    proto = build_onnx(model, cfg, batch=1, simplify=simplify, example=clip)
    rec.set("export_s", round(time.perf_counter() - t0, 2))
    t0 = time.perf_counter()
    session = make_session(proto, allow_spinning=False)
    rec.set("session_s", round(time.perf_counter() - t0, 2))
    rec.set("ort_threads", session.get_session_options().intra_op_num_threads or "default")
    name = session.get_inputs()[0].name
    x = torch.from_numpy(clip)

    def run_ort() -> Any:
        return session.run(None, {name: clip})[0]

    def run_torch() -> Any:
        with torch.inference_mode():
            return model(x)

    for _ in range(warmup):
        run_ort()
        run_torch()
    times: dict[str, list[float]] = {"onnxruntime": [], "torch": []}
    deadline_ok = True
    for _ in range(iters):
        for key, fn in (("onnxruntime", run_ort), ("torch", run_torch)):
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
        if rec.time_left() < 0:
            deadline_ok = False
            break
    rows = {k: _percentiles(v) for k, v in times.items()}
    err = compare_heatmaps(run_torch().numpy(), run_ort())
    rows["onnxruntime"].update(
        heatmap_max_abs=err.max_abs, keypoint_agreement=err.keypoint_agreement, finite=err.finite
    )
    rec.set("rows", [{"backend": k, "batch": 1, "status": "ok", **v} for k, v in rows.items()])
    rec.set("ort_speedup_vs_torch", rows["torch"]["p50_ms"] / rows["onnxruntime"]["p50_ms"])
    if not deadline_ok:
        rec.degrade("fewer timed rounds than asked (time guard)")


def _as_kernel_row(row: dict[str, Any]) -> dict[str, Any]:
    """A bandwidth row counts for the kernel only when the kernel itself was timed."""
    if row.get("status") == "ok" and row.get("kernel_gbps") is None:
        return {"status": "skipped", "reason": row.get("kernel_note") or "the kernel was not timed"}
    return row


@dataclass(frozen=True)
class Subject:
    """What a section's title promises: the rows that must run for the section to be ``ok``."""

    table: str
    what: str
    rows: Callable[[dict[str, Any]], bool] = lambda r: True
    as_item: Callable[[dict[str, Any]], dict[str, Any]] = lambda r: r


SUBJECTS: dict[str, Subject] = {
    "kernel_correctness": Subject(
        "cases",
        "PTX kernel cases (cuda-python, cupy)",
        rows=lambda r: r.get("path") in ("cuda-python", "cupy"),
    ),
    "kernel_bandwidth": Subject("rows", "kernel bandwidth rows", as_item=_as_kernel_row),
    "torch_latency": Subject("rows", "latency rows (variant x batch)"),
    "dcn_forms": Subject("rows", "DCN rows (form x dtype x batch)"),
    "ort_cpu": Subject("rows", "backend rows"),
}


def subject_counts(name: str, data: dict[str, Any]) -> Tally | None:
    """How much of section ``name``'s subject ran, from its recorded rows."""
    subject = SUBJECTS.get(name)
    if subject is None:
        return None
    return tally(subject.as_item(r) for r in data.get(subject.table, []) if subject.rows(r))


def apply_subject(name: str, data: dict[str, Any]) -> None:
    """Record the counts and make the status honest: nothing of the subject ran is never ``ok``."""
    counts = subject_counts(name, data)
    if counts is None:
        return
    data["counts"] = counts.to_dict()
    status, reason = judge(data["status"], counts, SUBJECTS[name].what)
    data["status"] = status
    if reason:
        data["reason"] = "; ".join(r for r in (reason, data.get("reason")) if r)


SECTION_FUNCS: dict[str, Callable[[Options, Recorder], None]] = {
    "environment": section_environment,
    "kernel_correctness": section_kernel_correctness,
    "kernel_bandwidth": section_kernel_bandwidth,
    "torch_latency": section_torch_latency,
    "dcn_forms": section_dcn_forms,
    "ort_cpu": section_ort_cpu,
}


# ------------------------------------------------------------------------------------------ runner


def run_section(name: str, opts: Options, out: Path | None, deadline: float) -> dict[str, Any]:
    """One section in this process; its result (status, reason, figures), never an exception."""
    rec = Recorder(out, deadline)
    t0 = time.perf_counter()
    try:
        SECTION_FUNCS[name](opts, rec)
    except SectionSkipped as e:
        rec.data.update(status="skipped", reason=str(e))
    except TimeGuard as e:
        rec.degrade(str(e))
    except Exception as e:
        rec.data.update(status="failed", reason=_one_line(e), traceback=traceback.format_exc()[-4000:])
    apply_subject(name, rec.data)
    rec.data["seconds"] = round(time.perf_counter() - t0, 2)
    rec.flush()
    return rec.data


def _worker_cmd(name: str, opts: Options, out: Path, deadline: float) -> list[str]:
    cmd = [sys.executable, "-m", "tdmi.benchmarks.gpu_check", "--device", opts.device]
    cmd += ["--seed", str(opts.seed), "--worker", name, "--worker-out", str(out)]
    cmd += ["--worker-deadline", repr(deadline)]
    return [*cmd, "--quick"] if opts.quick else cmd


def _run_isolated(name: str, opts: Options, timeout: float, workdir: Path) -> dict[str, Any]:
    """The section in a worker process, killed (with its children) at ``timeout``."""
    out = workdir / f"{name}.json"
    log = workdir / f"{name}.log"
    deadline = time.time() + timeout - SOFT_MARGIN_S
    t0 = time.perf_counter()
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            _worker_cmd(name, opts, out, deadline),
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: inductor workers die with it
        )
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
    elapsed = time.perf_counter() - t0
    try:
        data: dict[str, Any] = json.loads(out.read_text())
    except (OSError, ValueError):
        data = {"status": "failed", "reason": "the worker left no result", "notes": []}
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    if timed_out:
        data["status"] = "timeout"
        data["reason"] = f"stopped by the time guard after {elapsed:.0f} s (kept what it measured)"
    elif rc != 0:  # a crash (CUDA fault, OOM kill): what it wrote before dying is kept
        why = f"worker exited with {rc}" + (f" (signal {-rc})" if rc < 0 else "")
        data["status"] = "failed"
        data["reason"] = "; ".join(r for r in (why, data.get("reason")) if r)
    if data["status"] in ("failed", "timeout") and tail:
        data["log_tail"] = tail
    data["seconds"] = round(elapsed, 2)
    return data


def run_kit(
    opts: Options,
    sections: list[str] | None = None,
    time_limit: float = DEFAULT_TIME_LIMIT_S,
    json_path: Path | None = None,
    md_path: Path | None = None,
    isolate: bool = True,
    on_section: Callable[[str, dict[str, Any]], None] | None = None,
    on_start: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Run the sections (in :data:`RUN_ORDER`) under the global ``time_limit``; the report is on disk
    after each one."""
    unknown = sorted(set(sections or ()) - set(SECTIONS))
    if unknown:
        raise TdmiError(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    chosen = [n for n in RUN_ORDER if sections is None or n in sections]
    start = time.time()
    report: dict[str, Any] = {
        "kit": "tdmi-gpu-check",
        "schema": 1,
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "options": asdict(opts) | {"time_limit_s": time_limit, "isolated": isolate},
        "argv": sys.argv[1:],
        "selected": chosen,
        "sections": {
            n: {"title": TITLES[n], "status": "not_run", "reason": "not selected"} for n in SECTIONS
        },
    }
    for n in chosen:
        report["sections"][n] = {"title": TITLES[n], "status": "not_run", "reason": "pending"}
    _write(report, json_path, md_path)
    with tempfile.TemporaryDirectory(prefix="tdmi-gpu-check-") as tmp:
        for i, name in enumerate(chosen):
            later = len(chosen) - i - 1
            remaining = time_limit - (time.time() - start)
            timeout = min(SECTION_CAPS_S[name], remaining - later * RESERVE_PER_LATER_SECTION_S)
            if timeout < SOFT_MARGIN_S + 1:
                result: dict[str, Any] = {
                    "status": "not_run",
                    "reason": f"global time guard ({time_limit:.0f} s) reached",
                }
            else:
                if on_start is not None:
                    on_start(name, timeout)
                if isolate:
                    result = _run_isolated(name, opts, timeout, Path(tmp))
                else:
                    result = run_section(name, opts, None, time.time() + timeout - SOFT_MARGIN_S)
            report["sections"][name] = {"title": TITLES[name], **result}
            report["elapsed_s"] = round(time.time() - start, 1)
            _write(report, json_path, md_path)
            if on_section is not None:
                on_section(name, report["sections"][name])
    report["finished_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _write(report, json_path, md_path)
    return report


def _write(report: dict[str, Any], json_path: Path | None, md_path: Path | None) -> None:
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(report, indent=2, default=_json_default) + "\n")
    if md_path is not None:
        write_text_atomic(md_path, to_markdown(report))


def exit_code(report: dict[str, Any]) -> int:
    """0 when every selected section ran (ok, partial or skipped with its reason), else 1."""
    secs = report["sections"]
    bad = [n for n in report.get("selected", secs) if secs[n]["status"] in ("failed", "timeout", "not_run")]
    return 1 if bad else 0


# ---------------------------------------------------------------------------------------- markdown


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.2e}"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    if isinstance(value, list):
        return "x".join(map(str, value))
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    if not rows:
        return ["(no rows)", ""]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        why = r.get("error") or r.get("reason")
        cells = [_cell(r.get(c)) for c in columns]
        if why and r.get("status") != "ok":
            cells[-1] = _cell(why)
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


MD_COLUMNS: dict[str, list[str]] = {
    "kernel_correctness": [
        "path", "case", "dtype", "align", "status", "vector_path", "bit_exact", "mismatches", "max_abs_diff",
    ],
    "kernel_bandwidth": [
        "stage", "dtype", "batch", "status", "kernel_gbps", "copy_gbps", "torch_gbps", "compiled_gbps",
        "kernel_vs_copy", "speedup_vs_torch", "speedup_vs_compiled", "compile_s",
    ],
    "torch_latency": [
        "variant", "batch", "status", "p50_ms", "p90_ms", "clips_per_s", "speedup_vs_eager_fp32",
        "peak_mem_mib", "first_call_s", "heatmap_max_rel", "keypoint_agreement",
    ],
    "dcn_forms": [
        "form", "dtype", "batch", "status", "p50_ms", "time_vs_torchvision", "max_abs_err", "max_rel_err",
    ],
    "ort_cpu": ["backend", "batch", "status", "p50_ms", "p90_ms", "heatmap_max_abs", "keypoint_agreement"],
}  # fmt: skip


MD_FACTS = (
    "setup",
    "paths",
    "counts",
    "summary",
    "goals_met",
    "export_s",
    "session_s",
    "ort_speedup_vs_torch",
)


def to_markdown(report: dict[str, Any]) -> str:
    secs = report["sections"]
    env = secs.get("environment", {})
    gpu = env.get("gpu") or {}
    machine = gpu.get("name") if gpu.get("available") else "no GPU"
    lines = [
        "# TDMI GPU evidence",
        "",
        f"Machine: **{machine}**; started {report['started_utc']}, "
        f"commit {env.get('git_commit') or 'unknown'}; options {_cell(json.dumps(report['options']))}.",
        "",
        "| section | status | ran / skipped | seconds | reason |",
        "|---|---|---|---|---|",
    ]
    for name in SECTIONS:
        s = secs[name]
        c = s.get("counts")
        ran = f"{c['ran']} / {c['skipped'] + c['not_run']}" if c else "-"
        cells = (s["title"], s["status"], ran, _cell(s.get("seconds")), _cell(s.get("reason")))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name in SECTIONS:
        s = secs[name]
        lines += [f"## {s['title']}", "", f"Status: **{s['status']}**. {s.get('reason') or ''}".rstrip(), ""]
        if name == "environment":
            for key in ("host", "torch", "gpu", "packages"):
                if key in s:
                    lines.append(f"- {key}: `{json.dumps(s[key], default=str)}`")
            lines.append("")
        for key in MD_FACTS:
            if key in s:
                lines.append(f"- {key}: `{json.dumps(s[key], default=_json_default)}`")
        if name in MD_COLUMNS:
            rows = s.get("rows") or s.get("cases") or []
            lines += ["", *_table(rows, MD_COLUMNS[name])]
        for note in s.get("notes", []):
            lines.append(f"- note: {note}")
        if s.get("log_tail"):
            lines += ["", "```", s["log_tail"][-1500:], "```", ""]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- CLI


def _parse(argv: list[str] | None, prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", dest="json_out", type=Path, default=None, help="write the report as JSON")
    parser.add_argument("--md", dest="md_out", type=Path, default=None, help="write the report as Markdown")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="default cuda")
    parser.add_argument("--quick", action="store_true", help="toy sizes, few iterations (the CI dry run)")
    parser.add_argument(
        "--sections", default=None, help=f"comma-separated subset (default all: {','.join(SECTIONS)})"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT_S,
        help=f"global limit in seconds (default {DEFAULT_TIME_LIMIT_S:.0f}); sections past it are not run",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-isolate", action="store_true", help="run sections in this process (debugging)")
    parser.add_argument("--verbose", "-v", action="store_true", help="traceback on error")
    parser.add_argument("--worker", choices=SECTIONS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.time_limit <= 0:
        parser.error("--time-limit must be positive")
    for path in (args.json_out, args.md_out):
        if path is not None and not (path.parent if str(path.parent) else Path(".")).is_dir():
            parser.error(f"output folder {path.parent} does not exist: create it or choose another path")
    return args


def main(argv: list[str] | None = None, prog: str = "python -m tdmi.benchmarks.gpu_check") -> int:
    args = _parse(argv, prog)
    opts = Options(device=args.device, quick=args.quick, seed=args.seed)
    if args.worker:
        result = run_section(args.worker, opts, args.worker_out, args.worker_deadline or time.time() + 60)
        if result["status"] == "failed" and "traceback" in result:
            print(result["traceback"], file=sys.stderr)
        return 0
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)  # one line per section, also in logs
    sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None

    def show(name: str, s: dict[str, Any]) -> None:
        colour = {"ok": "green", "partial": "yellow", "skipped": "cyan"}.get(s["status"], "red")
        reason = f": {s.get('reason')}" if s.get("reason") else ""
        console.print(
            f"[{colour}]{s['status']:>8}[/] {s['title']} ({_cell(s.get('seconds'))} s){reason}", markup=True
        )

    def started(name: str, timeout: float) -> None:
        console.print(f"[dim]{'running':>8} {TITLES[name]} (at most {timeout:.0f} s)[/]", markup=True)

    try:
        report = run_kit(
            opts,
            sections,
            args.time_limit,
            args.json_out,
            args.md_out,
            isolate=not args.no_isolate,
            on_section=show,
            on_start=started,
        )
    except TdmiError as e:
        if args.verbose:
            traceback.print_exc()
        Console(stderr=True).print(f"error: {e}", markup=False)
        return 1
    for path in (args.json_out, args.md_out):
        if path is not None:
            console.print(f"wrote {path}", markup=False)
    return exit_code(report)


if __name__ == "__main__":
    sys.exit(main())
