"""ONNX Runtime predictor: CPU, or CUDA when onnxruntime-gpu is installed.

Needs only ``onnxruntime`` (no ``onnx``, no torch): the file is handed to ONNX Runtime as it is,
and the tdmi metadata comes from ``get_modelmeta().custom_metadata_map``. A fused graph (the
``tdmi::TemporalDiff`` plugin node, written for TensorRT) has no ONNX Runtime kernel: it is refused
with the command that writes the plain form, which every ONNX Runtime provider runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tdmi.artifacts.onnx_meta import INPUT_NAME, parse_metadata
from tdmi.errors import BackendUnavailableError, ConfigError, DataError
from tdmi.plugins.availability import require_onnxruntime
from tdmi.plugins.ort import check_model_file, create_session
from tdmi.runtime.base import Predictor

FUSED_OP = "TemporalDiff"
FUSED_HINT = (
    "it is a fused TensorRT graph (tdmi::TemporalDiff plugin op), which ONNX Runtime cannot run: use the "
    "plain ONNX from `tdmi-export onnx`, or write one with `tdmi-build-engine SRC --no-fuse --onnx-only -o "
    "plain.onnx`"
)


def _providers(ort: Any, device: str | None) -> tuple[list[Any], str]:
    available = ort.get_available_providers()
    want_cuda = device is not None and str(device).startswith("cuda")
    if want_cuda:
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError(
                "device 'cuda' needs ONNX Runtime's CUDA provider: pip install onnxruntime-gpu (have "
                f"{', '.join(available)})"
            )
        index = int(str(device).split(":", 1)[1]) if ":" in str(device) else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], f"cuda:{index}"
    if device in (None, "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"
    if device not in (None, "auto", "cpu"):
        raise ConfigError(f"unknown device {device!r} for onnxruntime: use 'cpu' or 'cuda'")
    return ["CPUExecutionProvider"], "cpu"


def _explain(text: str) -> str | None:
    """ORT's load error for a fused graph, told as what to run instead."""
    return FUSED_HINT if FUSED_OP in text and "tdmi" in text else None


def ort_session(
    path: str | Path,
    device: str | None = None,
    threads: int | None = None,
    allow_spinning: bool | None = None,
    what: str = "ONNX file",
) -> tuple[Any, str]:
    """A session for any graph file on the device asked for: (session, device).

    The runtime's device policy (cpu / cuda[:N] / auto -> providers) on top of the one factory,
    :func:`tdmi.plugins.ort.create_session`; missing, empty and unreadable files, and fused graphs,
    are refused in one line each.
    """
    ort = require_onnxruntime()
    check_model_file(Path(path), what)  # a missing file is said before a missing CUDA provider
    providers, dev = _providers(ort, device)
    session = create_session(
        path, providers=providers, threads=threads, allow_spinning=allow_spinning, what=what, explain=_explain
    )
    return session, dev


def open_session(
    path: str | Path,
    device: str | None = None,
    threads: int | None = None,
    allow_spinning: bool | None = None,
) -> tuple[Any, dict[str, Any], str]:
    """A session for a tdmi graph: (session, parsed tdmi metadata, device); metadata-less files are
    refused."""
    session, dev = ort_session(path, device, threads, allow_spinning)
    meta = parse_metadata(session.get_modelmeta().custom_metadata_map)
    return session, meta, dev


class OnnxRuntimePredictor(Predictor):
    backend = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        device: str | None = None,
        threads: int | None = None,
        allow_spinning: bool | None = None,
    ) -> None:
        path = Path(path)
        self.session, meta, dev = open_session(path, device, threads, allow_spinning)
        inputs = self.session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise DataError(
                f"{path} must have the single input {INPUT_NAME!r}, has {[i.name for i in inputs]}"
            )
        batch = inputs[0].shape[0]
        static = batch if isinstance(batch, int) and batch > 0 else None
        self.fused = bool(meta["fused"])
        # An FP16 graph converted without keeping I/O types takes float16; callers always pass float32.
        self._input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        super().__init__(
            meta["config"],
            precision=meta["precision"],
            device=dev,
            min_batch=static or 1,
            max_batch=static,
            source=str(path),
        )

    def _run_numpy(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {INPUT_NAME: x.astype(self._input_dtype, copy=False)})[0]
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        super().close()
        self.session = None
