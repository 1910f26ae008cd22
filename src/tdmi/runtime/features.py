"""Per-frame features + temporal head: the split form of a predictor, for reusing backbone work.

A :class:`FramePredictor` runs the backbone on single crops (``frame_features``) and the temporal
head on T frames' stacked features (``head``); composed they give what ``Predictor.predict`` gives
on the clip. Torch runs the two halves of the reference module (no export needed; ``torch_backend``); ONNX
Runtime runs the pair of graphs written by ``tdmi-export onnx --split``, and OpenVINO the same pair
exported with ``--deform-conv decomposed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tdmi.artifacts.split import HEAD_INPUTS, split_paths
from tdmi.errors import BackendUnavailableError, ConfigError, ExportError
from tdmi.runtime.base import FramePredictor

__all__ = ["FramePredictor", "OnnxFramePredictor", "frame_predictor_for"]


def _require_pair(bpath: Path, hpath: Path, options: str) -> None:
    """Both halves on disk, or the export command (with ``options``) that writes them."""
    for p in (bpath, hpath):
        if not p.is_file():
            raise ExportError(
                f"{p} not found: write the pair with `tdmi-export onnx {options} -o "
                f"{hpath.name.removesuffix('.head.onnx')}.onnx`"
            )


def _check_pair(bpath: Path, hpath: Path, bmeta: dict[str, Any], hmeta: dict[str, Any]) -> None:
    """The two files are halves of one export: the same model config, marked backbone and head."""
    if bmeta["config"].to_dict() != hmeta["config"].to_dict():
        raise ExportError(f"{bpath} and {hpath} come from different model configs: re-export the pair")
    if (bmeta["extra"].get("split"), hmeta["extra"].get("split")) != ("backbone", "head"):
        raise ExportError(f"{bpath} / {hpath} are not a backbone/head pair from `tdmi-export onnx --split`")


class OnnxFramePredictor(FramePredictor):
    """The ``*.backbone.onnx`` / ``*.head.onnx`` pair on ONNX Runtime (CPU, or CUDA if installed)."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, device: str | None = None, threads: int | None = None) -> None:
        from tdmi.runtime.onnxruntime_backend import open_session

        bpath, hpath = split_paths(path)
        _require_pair(bpath, hpath, "--split")
        self._bsess, bmeta, self.device = open_session(bpath, device, threads)
        self._hsess, hmeta, _ = open_session(hpath, self.device, threads)
        _check_pair(bpath, hpath, bmeta, hmeta)
        super().__init__(bmeta["config"])
        self._in_name = self._bsess.get_inputs()[0].name

    def frame_features(self, crops: np.ndarray) -> list[np.ndarray]:
        outs = self._bsess.run(None, {self._in_name: self._check_crops(crops)})
        return [np.asarray(o, dtype=np.float32) for o in outs]

    def head(self, stacks: list[np.ndarray]) -> np.ndarray:
        feeds = dict(zip(HEAD_INPUTS, self._check_stacks(stacks), strict=True))
        return np.asarray(self._hsess.run(None, feeds)[0], dtype=np.float32)

    def close(self) -> None:
        super().close()
        self._bsess = self._hsess = None


class OpenVINOFramePredictor(FramePredictor):
    """The split pair (decomposed DCN) on OpenVINO's CPU plug-in, at the CPU's default precision
    unless ``inference_precision`` says otherwise (read back into ``self.inference_precision``)."""

    backend = "openvino"

    def __init__(
        self, path: str | Path, threads: int | None = None, inference_precision: str | None = None
    ) -> None:
        from tdmi.artifacts.onnx_meta import parse_metadata
        from tdmi.plugins.openvino import (
            compile_properties,
            precision_name,
            read_model_checked,
            require_openvino,
            rt_metadata,
        )

        core = require_openvino().Core()
        bpath, hpath = split_paths(Path(path).with_suffix(".onnx") if str(path).endswith(".xml") else path)
        _require_pair(bpath, hpath, "--split --deform-conv decomposed")
        bmodel, hmodel = read_model_checked(core, bpath), read_model_checked(core, hpath)
        bmeta, hmeta = parse_metadata(rt_metadata(bmodel)), parse_metadata(rt_metadata(hmodel))
        _check_pair(bpath, hpath, bmeta, hmeta)
        super().__init__(bmeta["config"])
        self.device = "cpu"
        props = compile_properties(threads, "LATENCY", inference_precision)
        try:
            self._bexec = core.compile_model(bmodel, "CPU", props)
            self._hexec = core.compile_model(hmodel, "CPU", props)
        except Exception as e:
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            raise ExportError(
                f"OpenVINO cannot compile the split pair {bpath.name}/{hpath.name}: {first}"
            ) from None
        self._breq, self._hreq = self._bexec.create_infer_request(), self._hexec.create_infer_request()
        self._bouts = [o.get_any_name() for o in bmodel.outputs]
        self.inference_precision = precision_name(self._bexec.get_property("INFERENCE_PRECISION_HINT"))

    def frame_features(self, crops: np.ndarray) -> list[np.ndarray]:
        res = self._breq.infer([self._check_crops(crops)], share_inputs=False)
        return [np.array(res[o], dtype=np.float32, copy=True) for o in self._bexec.outputs]

    def head(self, stacks: list[np.ndarray]) -> np.ndarray:
        feeds = dict(zip(HEAD_INPUTS, self._check_stacks(stacks), strict=True))
        res = self._hreq.infer(feeds, share_inputs=False)
        return np.array(res[self._hexec.outputs[0]], dtype=np.float32, copy=True)

    def close(self) -> None:
        super().close()
        self._breq = self._hreq = self._bexec = self._hexec = None


def frame_predictor_for(predictor: Any, split: str | Path | None = None) -> FramePredictor:
    """The split form that matches ``predictor``: the torch module halves, or a split ONNX pair
    on the predictor's engine (ONNX Runtime or OpenVINO)."""
    if split is not None:
        if predictor.backend == "openvino":
            fp: FramePredictor = OpenVINOFramePredictor(split, threads=getattr(predictor, "threads", None))
        else:
            fp = OnnxFramePredictor(split, threads=None)
        if fp.config.to_dict() != predictor.config.to_dict():
            raise ConfigError(f"the split pair {split} was exported from another config than the predictor")
        return fp
    if predictor.backend == "torch":
        from tdmi.runtime.torch_backend import TorchFramePredictor

        return TorchFramePredictor(predictor.model, predictor.device)
    if predictor.backend == "onnxruntime":
        bpath, _ = split_paths(predictor.source)
        if bpath.is_file():
            return OnnxFramePredictor(predictor.source, device=predictor.device)
        raise BackendUnavailableError(
            f"reusing features on ONNX Runtime needs the split pair beside {predictor.source}: export "
            f"`tdmi-export onnx --split -o {predictor.source}`"
        )
    if predictor.backend == "openvino":
        src = Path(predictor.source)
        bpath, _ = split_paths(src.with_suffix(".onnx") if src.suffix == ".xml" else src)
        if bpath.is_file():
            return OpenVINOFramePredictor(bpath, threads=getattr(predictor, "threads", None))
        raise BackendUnavailableError(
            f"reusing features on OpenVINO needs the split pair {bpath.name} / .head.onnx beside "
            f"{predictor.source}: export `tdmi-export onnx --split --deform-conv decomposed -o "
            f"{src.with_suffix('.onnx')}`"
        )
    raise BackendUnavailableError(
        f"--reuse-features is not available on the {predictor.backend} backend: use torch, ONNX Runtime "
        "or OpenVINO"
    )
