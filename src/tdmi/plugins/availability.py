"""Is nvcc / a CUDA GPU / TensorRT here?  One answer, with a reason a user can act on.

Tests turn these into skips (``pytest.mark.skipif(not nvcc_available(), reason=...)``) and the
library turns them into :class:`~tdmi.errors.BackendUnavailableError`; both print the same reason.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdmi.errors import BackendUnavailableError
from tdmi.versions import version_tuple

if TYPE_CHECKING:
    from tdmi.artifacts.sidecar import BuildEnvironment

TENSORRT_MISSING = (
    "TensorRT is not installed: pip install 'tdmi-deploy[trt]' on a machine with an NVIDIA driver"
)
CUDA_PYTHON_MISSING = "cuda-python is not installed: pip install 'tdmi-deploy[trt]' (or cuda-python>=12.6)"


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str  # why not (empty when ok)

    def __bool__(self) -> bool:
        return self.ok

    def require(self) -> None:
        """Raise :class:`BackendUnavailableError` with the reason when unavailable."""
        if not self.ok:
            raise BackendUnavailableError(self.reason)


def find_nvcc() -> Path | None:
    """nvcc from ``$CUDACXX``, ``PATH`` or ``$CUDA_HOME/bin``, in that order."""
    for candidate in (os.environ.get("CUDACXX"), shutil.which("nvcc")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return Path(home) / "bin" / "nvcc"
    return None


def nvcc_available() -> Availability:
    if find_nvcc() is None:
        return Availability(False, "nvcc not found (install the CUDA toolkit or set CUDACXX / CUDA_HOME)")
    return Availability(True, "")


def tensorrt_available() -> Availability:
    """TensorRT with the ``tensorrt.plugin`` AOT API (>= 10.9); importing it needs a driver."""
    if importlib.util.find_spec("tensorrt") is None:
        return Availability(False, TENSORRT_MISSING)
    try:
        import tensorrt as trt
    except Exception as exc:  # stub wheels and missing libnvinfer raise all sorts of errors
        return Availability(False, f"{TENSORRT_MISSING} (import failed: {exc})")
    if not hasattr(trt, "QuickPluginCreationRequest"):
        return Availability(
            False, f"TensorRT {getattr(trt, '__version__', '?')} lacks AOT Python plugins: need >= 10.9"
        )
    return Availability(True, "")


@functools.lru_cache(maxsize=1)
def _driver_device_count() -> tuple[int, str]:
    try:
        from cuda.bindings import driver
    except ImportError:
        return 0, CUDA_PYTHON_MISSING
    try:
        (err,) = driver.cuInit(0)
    except Exception as exc:  # libcuda.so missing: no NVIDIA driver
        return 0, f"no NVIDIA driver (libcuda could not be loaded: {exc})"
    if err != driver.CUresult.CUDA_SUCCESS:
        return 0, f"no usable CUDA driver/GPU (cuInit: {err.name})"
    err, count = driver.cuDeviceGetCount()
    if err != driver.CUresult.CUDA_SUCCESS or count == 0:
        return 0, "no CUDA GPU visible (cuDeviceGetCount returned 0)"
    return int(count), ""


def cuda_gpu_available() -> Availability:
    count, reason = _driver_device_count()
    return Availability(count > 0, reason)


def compute_capability(device: int = 0) -> tuple[int, int]:
    """(major, minor) of a CUDA device, via the driver API."""
    cuda_gpu_available().require()
    from cuda.bindings import driver

    err, dev = driver.cuDeviceGet(device)
    if err != driver.CUresult.CUDA_SUCCESS:
        raise BackendUnavailableError(f"CUDA device {device} not available ({err.name})")
    attr = driver.CUdevice_attribute
    _, major = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
    _, minor = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
    return int(major), int(minor)


def torch_cuda_available() -> Availability:
    """The launcher/benchmark take torch CUDA tensors."""
    try:
        import torch
    except ImportError:
        return Availability(False, "PyTorch is not installed")
    if not torch.cuda.is_available():
        return Availability(False, "PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)")
    return Availability(True, "")


MIN_ORT_VERSION = (1, 25)


def require_onnxruntime() -> Any:
    """Import ONNX Runtime, insisting on a version whose CPU DeformConv kernel we rely on."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError(
            "ONNX Runtime is not installed: pip install 'onnxruntime>=1.25' (or run with --no-verify)"
        ) from None
    if version_tuple(ort.__version__, "ONNX Runtime") < MIN_ORT_VERSION:
        need = ".".join(map(str, MIN_ORT_VERSION))
        raise BackendUnavailableError(
            f"ONNX Runtime {ort.__version__} is too old (DeformConv needs >= {need}): "
            f"pip install -U 'onnxruntime>={need}'"
        )
    return ort


def require_tensorrt(hint: str = "") -> Any:
    """Import TensorRT on a machine with a usable NVIDIA GPU, or say what is missing and how to fix it.

    ``hint`` ends each message (the engine builder adds its ``--onnx-only`` way out).
    """
    trt_ok = tensorrt_available()
    if not trt_ok:
        raise BackendUnavailableError(trt_ok.reason + hint)
    gpu_ok = cuda_gpu_available()
    if not gpu_ok:
        raise BackendUnavailableError(
            f"TensorRT is installed but {gpu_ok.reason}: engines are built on the GPU they run on" + hint
        )
    import tensorrt as trt

    return trt


def probe_environment(trt: Any = None) -> BuildEnvironment:
    """TensorRT version, CUDA versions and the current GPU, as an engine's sidecar records them.

    The sidecar's view of the machine probe (:mod:`tdmi.plugins.machine`), kept here beside the
    TensorRT checks it depends on.
    """
    from tdmi.artifacts.sidecar import BuildEnvironment, GpuInfo
    from tdmi.plugins.machine import cuda_version_text

    cuda_gpu_available().require()
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise BackendUnavailableError(CUDA_PYTHON_MISSING) from None
    ok = cudart.cudaError_t.cudaSuccess
    err, device = cudart.cudaGetDevice()
    if err != ok:
        raise BackendUnavailableError(f"no current CUDA device ({err.name})")
    err, prop = cudart.cudaGetDeviceProperties(device)
    if err != ok:
        raise BackendUnavailableError(f"cannot query CUDA device {device} ({err.name})")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    _, runtime_version = cudart.cudaRuntimeGetVersion()
    _, driver_version = cudart.cudaDriverGetVersion()
    if trt is None:
        import tensorrt

        trt = tensorrt
    return BuildEnvironment(
        tensorrt_version=str(trt.__version__),
        cuda_runtime_version=cuda_version_text(int(runtime_version)),
        cuda_driver_version=cuda_version_text(int(driver_version)),
        gpu=GpuInfo(name=name.rstrip("\x00").strip(), compute_capability=f"{prop.major}.{prop.minor}"),
    )
