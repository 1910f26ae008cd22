"""Section 2, kernel correctness: the shipped TemporalDiff PTX, bit for bit against PyTorch.

Two independent launch paths (the plugins' cuda-python launcher and cupy), FP32 / FP16, T = 2/3/5,
(mis)aligned pointers, planes no vector width divides, an empty batch and W48 sizes up to B = 64;
the PyTorch reference itself is checked against the numpy one first.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from tdmi.errors import TdmiError
from tdmi.gpukit.measure import device_reason, skip
from tdmi.gpukit.options import Options, SectionSkipped
from tdmi.gpukit.record import Recorder, one_line

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


Launcher = Callable[[Any, Any, int], Any]  # (input, output, frames): writes the output
PATHS = ("torch-vs-numpy", "cuda-python", "cupy")


def _launchers(opts: Options, device: str, rec: Recorder) -> dict[str, Launcher | str]:
    """Each launch path, or why it cannot run here."""
    if device != "cuda":
        reason = device_reason(opts)
        return {"cuda-python": reason, "cupy": reason}
    import torch

    from tdmi.plugins.launch import load_module, run_temporal_diff

    launchers: dict[str, Launcher | str] = {}
    try:
        rec.set("ptx_arch", f"compute_{load_module(torch.cuda.current_device()).arch}")
        launchers["cuda-python"] = lambda x, out, t: run_temporal_diff(x, t, out=out)
    except Exception as e:
        launchers["cuda-python"] = one_line(e)
    try:
        launchers["cupy"] = _CupyLauncher(torch.cuda.current_device())
    except Exception as e:
        launchers["cupy"] = one_line(e)
    return launchers


def _reference_check(x: Any, want: Any, t: int) -> dict[str, Any]:
    """The PyTorch reference itself, against the numpy one (correctly rounded FP16)."""
    import numpy as np
    import torch

    from tdmi.plugins.temporal_diff import temporal_diff_reference

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


def _launch_check(launcher: Launcher, x: Any, want: Any, t: int, y_off: int, device: str) -> dict[str, Any]:
    """One launch path on one case: bit-exact against PyTorch, with the grid and vector path used."""
    import torch

    from tdmi.plugins import launch_params

    out = _offset_tensor(tuple(want.shape), y_off, x.dtype, device).fill_(float("nan"))
    config = launch_params.launch_config(tuple(x.shape), t, x.dtype)
    launcher(x, out, t)
    torch.cuda.synchronize()
    result = _bit_diff(out, want)
    result.update(
        grid=config.grid[0],
        vector_path=launch_params.uses_vector_path(config.plane, x.dtype, x.data_ptr(), out.data_ptr()),
    )
    if not result["bit_exact"]:
        result["status"] = "failed"
        result["error"] = f"{result['mismatches']} elements differ from PyTorch"
    return result


def section_kernel_correctness(opts: Options, rec: Recorder) -> None:
    import torch

    from tdmi.benchmarks.plugin_bandwidth import unfused_temporal_diff

    device = "cuda" if opts.cuda and torch.cuda.is_available() else "cpu"
    launchers = _launchers(opts, device, rec)
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
            ref_row = rec.row(
                "cases", {**base, "path": "torch-vs-numpy"}, partial(_reference_check, x, want, t)
            )
            if ref_row["status"] == "failed":
                rec.fail("the PyTorch reference disagrees with numpy (see cases)")
            for path, launcher in launchers.items():
                if not callable(launcher):
                    rec.row("cases", {**base, "path": path}, skip(launcher))
                    continue
                run = partial(_launch_check, launcher, x, want, t, y_off, device)
                if rec.row("cases", {**base, "path": path}, run, need_s=1.0).get("status") == "failed":
                    rec.fail("the kernel disagrees with PyTorch (see cases)")
            del x, want
    cases = rec.data.get("cases", [])
    summary = {
        path: {
            "run": sum(r["path"] == path and r["status"] in ("ok", "failed") for r in cases),
            "bit_exact": sum(r["path"] == path and r.get("bit_exact") is True for r in cases),
            "skipped": sum(r["path"] == path and r["status"] == "skipped" for r in cases),
        }
        for path in PATHS
    }
    rec.set("summary", summary)
    if device == "cuda":
        torch.cuda.empty_cache()
