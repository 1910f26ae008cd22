"""tdmi-deploy: TDMI video pose estimation from PyTorch to ONNX Runtime and TensorRT."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tdmi-deploy")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
