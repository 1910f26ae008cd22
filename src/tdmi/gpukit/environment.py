"""Section 1, environment: host, packages, PyTorch's build, the git commit and the GPU (if any)."""

from __future__ import annotations

from tdmi.gpukit.measure import device_reason
from tdmi.gpukit.options import IMAGE_PACKAGES, Options
from tdmi.gpukit.record import Recorder
from tdmi.plugins.machine import gpu_driver_facts, gpu_properties, host_info, package_versions
from tdmi.utils import source_commit


def section_environment(opts: Options, rec: Recorder) -> None:
    import torch

    rec.set("host", host_info())
    rec.set("packages", package_versions((*IMAGE_PACKAGES, "tdmi-deploy")))
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
        rec.set("gpu", {"available": False, "reason": device_reason(opts)})
        return
    if not torch.cuda.is_available():
        rec.set("gpu", {"available": False, "reason": device_reason(opts)})
        rec.fail(f"--device cuda but {device_reason(opts)}")
        return
    dev = torch.cuda.current_device()
    gpu = gpu_properties(dev)
    rec.set("gpu", gpu)  # on disk before the driver / cupy probes, which could take the worker down
    gpu.update(gpu_driver_facts(dev))
    rec.set("gpu", gpu)
