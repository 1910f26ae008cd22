"""Per-frame features + temporal head: the split form of a predictor, for reusing backbone work.

A :class:`FramePredictor` runs the backbone on single crops (``frame_features``) and the temporal
head on T frames' stacked features (``head``); composed they give what ``Predictor.predict`` gives
on the clip. Torch runs the two halves of the reference module (no export needed; ``torch_backend``); ONNX
Runtime runs the pair of graphs written by ``tdmi-export onnx --split``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tdmi.artifacts.split import HEAD_INPUTS, split_paths
from tdmi.errors import BackendUnavailableError, ConfigError, ExportError
from tdmi.runtime.base import FramePredictor

__all__ = ["FramePredictor", "OnnxFramePredictor", "frame_predictor_for"]


class OnnxFramePredictor(FramePredictor):
    """The ``*.backbone.onnx`` / ``*.head.onnx`` pair on ONNX Runtime (CPU, or CUDA if installed)."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, device: str | None = None, threads: int | None = None) -> None:
        from tdmi.runtime.onnxruntime_backend import open_session

        bpath, hpath = split_paths(path)
        for p in (bpath, hpath):
            if not p.is_file():
                raise ExportError(
                    f"{p} not found: write the pair with `tdmi-export onnx --split -o {hpath.name[:-9]}.onnx`"
                )
        self._bsess, bmeta, self.device = open_session(bpath, device, threads)
        self._hsess, hmeta, _ = open_session(hpath, self.device, threads)
        if bmeta["config"].to_dict() != hmeta["config"].to_dict():
            raise ExportError(f"{bpath} and {hpath} come from different model configs: re-export the pair")
        if (bmeta["extra"].get("split"), hmeta["extra"].get("split")) != ("backbone", "head"):
            raise ExportError(
                f"{bpath} / {hpath} are not a backbone/head pair from `tdmi-export onnx --split`"
            )
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


def frame_predictor_for(predictor: Any, split: str | Path | None = None) -> FramePredictor:
    """The split form that matches ``predictor``: the torch module halves, or a split ONNX pair."""
    if split is not None:
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
    raise BackendUnavailableError(
        f"--reuse-features is not available on the {predictor.backend} backend: use torch or ONNX Runtime"
    )
