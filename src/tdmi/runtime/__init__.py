"""One predictor interface over PyTorch, ONNX Runtime, OpenVINO and TensorRT.

``load`` picks the backend from the artifact: ``.onnx`` -> onnxruntime (or openvino when asked),
``.xml`` OpenVINO IR -> openvino, ``.engine``/``.plan`` -> tensorrt (via its sidecar), ``.pt``/``.pth``
checkpoints, preset names and ``TDMIConfig`` -> torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from tdmi.errors import ConfigError
from tdmi.runtime.base import Predictor, validate_clips
from tdmi.runtime.chunking import Chunk, plan_chunks
from tdmi.runtime.keypoints import predict_keypoints
from tdmi.spec.config import PRESETS, TDMIConfig

Backend = Literal["torch", "onnxruntime", "openvino", "tensorrt"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
_SUFFIX_BACKEND = {
    ".onnx": "onnxruntime",
    ".xml": "openvino",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".pt": "torch",
    ".pth": "torch",
}

__all__ = [
    "BACKENDS",
    "Chunk",
    "Predictor",
    "infer_backend",
    "load",
    "plan_chunks",
    "predict_keypoints",
    "validate_clips",
]


def infer_backend(source: Any) -> str:
    """The backend an artifact needs, from its type or file suffix."""
    if isinstance(source, TDMIConfig):
        return "torch"
    if not isinstance(source, (str, Path)):
        raise ConfigError(
            f"cannot load a predictor from {type(source).__name__}: pass a path, preset or TDMIConfig"
        )
    if isinstance(source, str) and source in PRESETS:
        return "torch"
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in _SUFFIX_BACKEND:
        return _SUFFIX_BACKEND[suffix]
    if suffix == ".json":  # a model config file
        return "torch"
    raise ConfigError(
        f"cannot tell which backend runs {source!r}: expected a .onnx, .xml (OpenVINO IR), .engine/.plan, "
        f".pt/.pth file, a .json config or a preset ({', '.join(PRESETS)})"
    )


def load(
    path_or_config: Any, backend: str | None = None, device: str | None = None, **options: Any
) -> Predictor:
    """A ready predictor for an artifact. ``options`` go to the backend (threads, cuda_graph, environment;
    OpenVINO: threads, performance_hint, inference_precision)."""
    inferred = infer_backend(path_or_config)
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "openvino" and inferred == "onnxruntime":
        inferred = "openvino"  # OpenVINO reads ONNX files too (the decomposed DCN graph)
    if backend is not None and backend != inferred:
        raise ConfigError(
            f"{path_or_config!r} is a {inferred} artifact, it cannot run on the {backend} backend"
        )
    if inferred == "torch":
        from tdmi.runtime.torch_backend import load_torch

        if options:
            raise ConfigError(f"the torch backend takes no options, got {sorted(options)}")
        return load_torch(path_or_config, device)
    if inferred == "onnxruntime":
        from tdmi.runtime.onnxruntime_backend import OnnxRuntimePredictor

        return OnnxRuntimePredictor(path_or_config, device, **options)
    if inferred == "openvino":
        from tdmi.runtime.openvino_backend import OpenVINOPredictor

        return OpenVINOPredictor(path_or_config, device, **options)
    from tdmi.runtime.tensorrt_backend import TensorRTPredictor

    return TensorRTPredictor(path_or_config, device, **options)
