"""OpenVINO predictor: the decomposed ONNX graph or an OpenVINO IR (``.xml`` + ``.bin``) on the CPU.

Why a fourth backend: on CPUs OpenVINO runs the graph in BF16 where the CPU has AVX-512 BF16 or
AMX (its default there) and runs NNCF's INT8 IR with oneDNN's VNNI kernels, both well ahead of
ONNX Runtime FP32 (issue 21, BENCHMARKS.md). The inference precision OpenVINO actually uses is read
back from the compiled model and reported as ``predictor.precision`` in the toolkit's names (``fp32``,
``bf16``, ``fp16``; an INT8 IR says ``int8+bf16`` and so on: INT8 where NNCF quantized, that
precision elsewhere).

The toolkit metadata (config, joints, normalisation) is read from OpenVINO's own ``rt_info``: an IR
written by ``tdmi-export openvino`` keeps it in its ``tdmi`` section, and OpenVINO's ONNX frontend
copies an ONNX file's ``metadata_props`` into the ``framework`` section. This module imports
neither torch nor onnx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tdmi.errors import ConfigError, DataError, ExportError
from tdmi.plugins.openvino import (
    DECOMPOSED_HINT,
    KEY_INFERENCE_PRECISION,
    compile_properties,
    precision_name,
    read_model_checked,
    require_openvino,
    rt_metadata,
)
from tdmi.runtime.base import Predictor

INPUT_NAME = "frames"


class OpenVINOPredictor(Predictor):
    """``.onnx`` (decomposed DCN) or ``.xml`` IR on OpenVINO's CPU plug-in.

    ``inference_precision``: ``fp32``, ``bf16``, ``fp16``, or ``None`` for the one the IR's export
    recorded, else OpenVINO's default for this CPU (BF16 on AVX-512 BF16 / AMX CPUs, else FP32).
    ``performance_hint``: ``LATENCY`` (default: one clip at a time, as the benchmark times it) or
    ``THROUGHPUT``.
    """

    backend = "openvino"

    def __init__(
        self,
        path: str | Path,
        device: str | None = None,
        threads: int | None = None,
        performance_hint: str | None = None,
        inference_precision: str | None = None,
    ) -> None:
        if device not in (None, "auto", "cpu", "CPU"):
            raise ConfigError(f"the OpenVINO backend runs on the CPU only, got device {device!r}")
        ov = require_openvino()
        path = Path(path)
        if path.suffix.lower() not in (".onnx", ".xml"):
            raise ConfigError(f"OpenVINO reads .onnx or .xml (IR) files, got {path}")
        self.core = ov.Core()
        model = read_model_checked(self.core, path)
        from tdmi.artifacts.onnx_meta import parse_metadata

        props = rt_metadata(model)
        meta = parse_metadata(props, "OpenVINO model" if path.suffix.lower() == ".xml" else "ONNX file")
        if meta["config"].deform_conv != "decomposed":
            raise ExportError(f"{path}: {DECOMPOSED_HINT}")
        if meta["fused"]:
            raise ExportError(
                f"{path} has the fused TemporalDiff op, which only TensorRT runs: use the unfused graph"
            )
        names = [i.get_any_name() for i in model.inputs]
        if names != [INPUT_NAME]:
            raise DataError(f"{path} must have the single input {INPUT_NAME!r}, has {names}")
        recorded = props.get(KEY_INFERENCE_PRECISION)
        asked = inference_precision if inference_precision is not None else recorded
        properties = compile_properties(threads, performance_hint, asked)
        try:
            self.compiled = self.core.compile_model(model, "CPU", properties)
        except Exception as e:
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            raise ExportError(f"OpenVINO cannot compile {path}: {first[:240]}") from None
        self.request = self.compiled.create_infer_request()
        #: what OpenVINO actually runs in (read back, never assumed): fp32, bf16 or fp16
        self.inference_precision = precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.performance_hint = str(self.compiled.get_property("PERFORMANCE_HINT")).split(".")[-1]
        self.precision_requested = asked or "default"
        self.artifact_precision = meta["precision"]
        self.metadata = meta
        batch = model.inputs[0].get_partial_shape()[0]
        static = batch.get_length() if batch.is_static else None
        if meta["precision"] == "int8":
            shown = f"int8+{self.inference_precision}"
        else:
            shown = self.inference_precision
        super().__init__(
            meta["config"],
            precision=shown,
            device="cpu",
            min_batch=static or 1,
            max_batch=static,
            source=str(path),
        )

    def describe(self) -> dict[str, Any]:
        """The settings OpenVINO compiled with, for reports (read back from the compiled model)."""
        return {
            "inference_precision": self.inference_precision,
            "requested": self.precision_requested,
            "threads": self.threads,
            "performance_hint": self.performance_hint,
            "artifact_precision": self.artifact_precision,
        }

    def _run_numpy(self, x: np.ndarray) -> np.ndarray:
        out = self.request.infer({INPUT_NAME: x}, share_inputs=False)
        return np.array(next(iter(out.values())), dtype=np.float32, copy=True)

    def close(self) -> None:
        super().close()
        self.request = None
        self.compiled = None
