"""What machine a figure was measured on: host, CPU, cores, vector extensions, GPU, driver, packages.

The one environment probe. ``tdmi-bench`` reports (:func:`machine_info`), the GPU evidence kit's
environment section (:func:`host_info`, :func:`package_versions`, :func:`gpu_properties`) and the
engine sidecar's build environment (:func:`tdmi.plugins.availability.probe_environment`, through
:func:`cuda_version_text`) all read the machine here. Torch-free at import (torch, cuda-python and
cupy are asked inside the functions, and each answer degrades to "not known" rather than failing),
so the bare GPU image and the deploy install can both use it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tdmi.utils import source_commit
from tdmi.versions import installed_version

INT8_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
# BF16 decides OpenVINO's default inference precision (BF16 with these, else FP32) and its speed.
BF16_ISA_FLAGS = ("avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16", "amx_tile")
NVIDIA_SMI_FIELDS = (
    "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,"
    "temperature.gpu,persistence_mode,mig.mode.current"
)
# Driver attributes worth a line in a report (key, CUdevice_attribute name).
DRIVER_ATTRIBUTES = (
    ("sm_clock_mhz", "CU_DEVICE_ATTRIBUTE_CLOCK_RATE"),
    ("memory_clock_mhz", "CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE"),
    ("memory_bus_bits", "CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH"),
    ("l2_bytes", "CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE"),
)


def one_line(exc: BaseException) -> str:
    """An error as one line of a report: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:400] if text else ''}".rstrip(": ")


def cuda_version_text(v: int) -> str:
    """CUDA's integer version (12060) as people write it ("12.6")."""
    return f"{v // 1000}.{(v % 1000) // 10}"


# ---------------------------------------------------------------------------------------------- CPU


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_int8_isa(cpuinfo: str | None = None) -> list[str] | None:
    """The CPU's vector extensions that decide INT8 speed (None: not known on this OS).

    Why: ONNX Runtime's INT8 kernels run several times faster with VNNI (measured here: INT8 2.3-2.5x
    over FP32 on an AVX-512 VNNI EPYC, 1.4x on an AVX2-only one), so an INT8 speed-up means little
    without them.
    """
    return _cpu_flags(INT8_ISA_FLAGS, cpuinfo)


def cpu_bf16_isa(cpuinfo: str | None = None) -> list[str] | None:
    """The CPU's BF16 / AMX extensions (None: not known on this OS).

    Why: OpenVINO runs FP32 graphs in BF16 by default only where these exist (AVX-512 BF16, AMX),
    and the BF16 speed-up over FP32 depends on which (AMX tiles are several times AVX-512 BF16's).
    """
    return _cpu_flags(BF16_ISA_FLAGS, cpuinfo)


def _cpu_flags(wanted: Sequence[str], cpuinfo: str | None) -> list[str] | None:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        if line.lower().startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [f for f in wanted if f in flags]
    return None


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), the default thread count of every backend."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def host_info() -> dict[str, Any]:
    """Python, OS and CPU count, as the GPU kit's environment section records them."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def package_versions(dists: Iterable[str]) -> dict[str, str | None]:
    """Each distribution's installed version (None: not installed)."""
    return {d: installed_version(d) for d in dists}


# ---------------------------------------------------------------------------------------------- GPU


def gpu_name() -> str | None:
    """The first CUDA GPU's name as PyTorch sees it (None without torch or a GPU)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return str(torch.cuda.get_device_name(0))


def gpu_properties(dev: int) -> dict[str, Any]:
    """CUDA device ``dev`` as PyTorch sees it, and the shipped PTX it would load (torch sees a GPU)."""
    import torch

    props = torch.cuda.get_device_properties(dev)
    gpu: dict[str, Any] = {
        "available": True,
        "count": torch.cuda.device_count(),
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 2),
        "multiprocessors": props.multi_processor_count,
    }
    from tdmi.plugins import ptx

    with contextlib.suppress(Exception):
        gpu["ptx_selected"] = f"compute_{ptx.select_arch((props.major, props.minor))}"
    return gpu


def gpu_driver_facts(dev: int) -> dict[str, Any]:
    """Driver, cupy and nvidia-smi facts of device ``dev`` (each says why when it cannot be read)."""
    return {**driver_info(dev), **cupy_info(), "nvidia_smi": nvidia_smi()}


def driver_info(dev: int) -> dict[str, Any]:
    """Driver version and clocks from the driver API (cuda-python); each field only if readable."""
    info: dict[str, Any] = {
        "cuda_python": installed_version("cuda-bindings") or installed_version("cuda-python")
    }
    try:
        from cuda.bindings import driver
    except ImportError as e:
        info["driver_error"] = one_line(e)
        return info
    try:
        driver.cuInit(0)
        err, ver = driver.cuDriverGetVersion()
        if err == driver.CUresult.CUDA_SUCCESS:
            info["driver_cuda_version"] = cuda_version_text(ver)
        err, cu_dev = driver.cuDeviceGet(dev)
        for key, name in DRIVER_ATTRIBUTES:
            attr = getattr(driver.CUdevice_attribute, name, None)
            if attr is None:
                continue
            err, value = driver.cuDeviceGetAttribute(attr, cu_dev)
            if err == driver.CUresult.CUDA_SUCCESS:
                info[key] = value // 1000 if key.endswith("_mhz") else value
    except Exception as e:  # the environment probe reports, it does not fail
        info["driver_error"] = one_line(e)
    return info


def cupy_info() -> dict[str, Any]:
    try:
        import cupy
    except ImportError as e:
        return {"cupy": None, "cupy_error": one_line(e)}
    try:
        rt = cupy.cuda.runtime.runtimeGetVersion()
        return {"cupy": cupy.__version__, "cupy_cuda_runtime": cuda_version_text(rt)}
    except Exception as e:
        return {"cupy": cupy.__version__, "cupy_error": one_line(e)}


def nvidia_smi() -> dict[str, str] | str:
    """Clocks, power limit, temperature and modes as nvidia-smi reports them (or why not)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={NVIDIA_SMI_FIELDS}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"not readable: {one_line(e)}"
    if out.returncode != 0:
        return f"not readable: exit {out.returncode}"
    first = out.stdout.strip().splitlines()[:1]
    values = [v.strip() for v in first[0].split(",")] if first else []
    return dict(zip(NVIDIA_SMI_FIELDS.split(","), values, strict=False))


# ------------------------------------------------------------------------------------ bench report


def machine_info() -> dict[str, Any]:
    """Where the numbers come from: results without the machine they were measured on mean nothing."""
    from tdmi import __version__

    v = installed_version
    versions = {
        "python": platform.python_version(),
        "tdmi-deploy": __version__,
        "torch": v("torch"),
        "onnx": v("onnx"),
        "onnxruntime": v("onnxruntime") or v("onnxruntime-gpu"),
        "numpy": v("numpy"),
        "nvidia-modelopt": v("nvidia-modelopt"),
        "tensorrt": v("tensorrt") or v("tensorrt-cu12") or v("tensorrt-cu13"),
        "openvino": v("openvino"),
        "nncf": v("nncf"),
    }
    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count() or 0,
        "cpu_cores_usable": usable_cores(),
        "cpu_int8_isa": cpu_int8_isa(),
        "cpu_bf16_isa": cpu_bf16_isa(),
        "gpu": gpu_name(),
        "platform": platform.platform(),
        "versions": versions,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": source_commit(),
    }
