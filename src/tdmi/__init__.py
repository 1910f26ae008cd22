"""tdmi-deploy: TDMI video pose estimation from PyTorch to ONNX Runtime and TensorRT."""

from __future__ import annotations

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    """``__version__`` on first use: importlib.metadata costs every command's start-up otherwise."""
    if name != "__version__":
        raise AttributeError(f"module 'tdmi' has no attribute {name!r}")
    from tdmi.versions import installed_version

    # "0.0.0+source": running from a source tree without an install
    value = installed_version("tdmi-deploy") or "0.0.0+source"
    globals()["__version__"] = value
    return value
