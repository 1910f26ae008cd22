"""ONNX Runtime predictor: CPU, or CUDA when onnxruntime-gpu is installed.

A fused graph carries ``tdmi::TemporalDiff``, which ONNX Runtime cannot run: it gets the export
module's CPU implementation (a model-local ONNX function, ``with_cpu_temporal_diff``), so it runs
on the CPU provider only; the file on disk is never changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tdmi.errors import BackendUnavailableError, ConfigError, DataError, ExportError
from tdmi.export.metadata import INPUT_NAME, load_onnx_checked, read_metadata
from tdmi.runtime.base import Predictor


def _providers(ort: Any, device: str | None, fused: bool) -> tuple[list[Any], str]:
    available = ort.get_available_providers()
    want_cuda = device is not None and str(device).startswith("cuda")
    if want_cuda:
        if fused:
            raise BackendUnavailableError(
                "this graph has the fused TemporalDiff op, which ONNX Runtime runs on the CPU only: use "
                "device='cpu', or the unfused ONNX (tdmi-build-engine --no-fuse --onnx-only) on CUDA"
            )
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError(
                "device 'cuda' needs ONNX Runtime's CUDA provider: pip install onnxruntime-gpu (have "
                f"{', '.join(available)})"
            )
        index = int(str(device).split(":", 1)[1]) if ":" in str(device) else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], f"cuda:{index}"
    if device in (None, "auto") and "CUDAExecutionProvider" in available and not fused:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"
    if device not in (None, "auto", "cpu"):
        raise ConfigError(f"unknown device {device!r} for onnxruntime: use 'cpu' or 'cuda'")
    return ["CPUExecutionProvider"], "cpu"


class OnnxRuntimePredictor(Predictor):
    backend = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        device: str | None = None,
        threads: int | None = None,
        allow_spinning: bool | None = None,
    ) -> None:
        from tdmi.export.ort_ops import require_onnxruntime, temporal_diff_nodes, with_cpu_temporal_diff

        ort = require_onnxruntime()
        path = Path(path)
        model = load_onnx_checked(path)
        meta = read_metadata(model)
        fused = bool(temporal_diff_nodes(model))
        providers, dev = _providers(ort, device, fused)
        runnable = with_cpu_temporal_diff(model) if fused else model
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        if allow_spinning is not None:
            # Spinning workers keep cores busy after each run: off when timing side by side with torch.
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        try:
            self.session = ort.InferenceSession(runnable.SerializeToString(), so, providers=providers)
        except Exception as e:  # ORT's exception types are not importable in a stable way
            first = (str(e).splitlines() or [type(e).__name__])[0][:240]
            raise ExportError(f"ONNX Runtime cannot load {path}: {first}") from None
        inputs = self.session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise DataError(
                f"{path} must have the single input {INPUT_NAME!r}, has {[i.name for i in inputs]}"
            )
        batch = inputs[0].shape[0]
        static = batch if isinstance(batch, int) and batch > 0 else None
        self.fused = fused
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
