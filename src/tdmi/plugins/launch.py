"""Run the shipped TemporalDiff PTX outside TensorRT (cuda-python driver API, torch tensors).

The GPU correctness test and the bandwidth benchmark go through :func:`run_temporal_diff`; it loads
the very PTX files TensorRT embeds and launches them with :func:`tdmi.plugins.launch_params.
launch_config`, the arithmetic the TensorRT AOT implementation uses, so what they verify and time
is what an engine runs.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tdmi.errors import BackendUnavailableError, TdmiError
from tdmi.plugins import launch_params, ptx
from tdmi.plugins.availability import CUDA_PYTHON_MISSING, compute_capability, torch_cuda_available

if TYPE_CHECKING:
    import torch


def _driver() -> Any:
    try:
        from cuda.bindings import driver
    except ImportError as exc:
        raise BackendUnavailableError(CUDA_PYTHON_MISSING) from exc
    return driver


def _check(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(CUresult, *values)`` tuple, raising on error."""
    driver = _driver()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != driver.CUresult.CUDA_SUCCESS:
        _, msg = driver.cuGetErrorString(err)
        detail = msg.decode() if isinstance(msg, bytes) else str(msg)
        hint = ""
        if err in (
            driver.CUresult.CUDA_ERROR_UNSUPPORTED_PTX_VERSION,
            driver.CUresult.CUDA_ERROR_INVALID_PTX,
        ):
            hint = " (the shipped PTX is ISA 9.0 from CUDA 13: update the NVIDIA driver to R580 or newer)"
        raise TdmiError(f"{what} failed: {err.name}: {detail}{hint}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass
class _LoadedModule:
    module: Any
    functions: dict[str, Any]
    arch: int


_MODULES: dict[int, _LoadedModule] = {}
_LOCK = threading.Lock()


def _ensure_context(device: int) -> None:
    """Make the device's primary context (the one torch uses) current on this thread."""
    driver = _driver()
    _check(driver.cuInit(0), "cuInit")
    ctx = _check(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
    if ctx is not None and int(ctx) != 0:
        current = _check(driver.cuCtxGetDevice(), "cuCtxGetDevice")
        if int(current) == device:
            return
    dev = _check(driver.cuDeviceGet(device), "cuDeviceGet")
    primary = _check(driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
    _check(driver.cuCtxSetCurrent(primary), "cuCtxSetCurrent")


def load_module(device: int = 0) -> _LoadedModule:
    """Load (once per device) the best shipped PTX for the device and resolve both entry points."""
    with _LOCK:
        if device in _MODULES:
            _ensure_context(device)
            return _MODULES[device]
        _ensure_context(device)
        driver = _driver()
        arch = ptx.select_arch(compute_capability(device))
        text = ptx.read_ptx(ptx.ptx_path(arch)).encode() + b"\0"
        module = _check(driver.cuModuleLoadData(text), f"loading compute_{arch} PTX (cuModuleLoadData)")
        functions = {
            name: _check(driver.cuModuleGetFunction(module, name.encode()), f"cuModuleGetFunction({name})")
            for name in launch_params.KERNEL_NAMES.values()
        }
        loaded = _LoadedModule(module=module, functions=functions, arch=arch)
        _MODULES[device] = loaded
        return loaded


def launch(
    x_ptr: int, y_ptr: int, config: launch_params.LaunchConfig, device: int = 0, stream: int = 0
) -> None:
    """Launch one TemporalDiff kernel on raw device pointers (asynchronous on ``stream``)."""
    if config.grid[0] == 0:
        return
    driver = _driver()
    loaded = load_module(device)
    args = (
        (x_ptr, *config.scalar_args, y_ptr),
        (ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p),
    )
    _check(
        driver.cuLaunchKernel(
            loaded.functions[config.kernel],
            *config.grid,
            *config.block,
            config.shared_mem,
            driver.CUstream(stream),
            args,
            0,
        ),
        f"cuLaunchKernel({config.kernel})",
    )


def run_temporal_diff(
    x_device: torch.Tensor, num_frames: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """TemporalDiff of a contiguous CUDA tensor ``[B*T, C, h, w]`` (FP32/FP16) on the current stream.

    Returns ``out`` (allocated when not given) of shape ``[B, (T-1)*C, h, w]``; like any CUDA op it
    is asynchronous with respect to the host.
    """
    torch_cuda_available().require()
    import torch

    if not isinstance(x_device, torch.Tensor) or not x_device.is_cuda:
        raise TypeError("run_temporal_diff expects a CUDA torch.Tensor")
    if not x_device.is_contiguous():
        raise ValueError("run_temporal_diff needs a contiguous input (the kernel indexes flat planes)")
    config = launch_params.launch_config(tuple(x_device.shape), num_frames, x_device.dtype)
    from tdmi.plugins.temporal_diff import output_shape

    shape = output_shape(tuple(x_device.shape), num_frames)
    if out is None:
        out = torch.empty(shape, dtype=x_device.dtype, device=x_device.device)
    elif tuple(out.shape) != shape or out.dtype != x_device.dtype or out.device != x_device.device:
        raise ValueError(f"out must be {shape} {x_device.dtype} on {x_device.device}")
    elif not out.is_contiguous():
        raise ValueError("out must be contiguous")
    device = x_device.device.index if x_device.device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(device).cuda_stream
    launch(x_device.data_ptr(), out.data_ptr(), config, device=device, stream=stream)
    return out
