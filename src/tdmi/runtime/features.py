"""Per-frame features + temporal head: the split form of a predictor, for reusing backbone work.

A :class:`FramePredictor` runs the backbone on single crops (``frame_features``) and the temporal
head on T frames' stacked features (``head``); composed they give what ``Predictor.predict`` gives
on the clip. Torch runs the two halves of the reference module (no export needed); ONNX Runtime runs
the pair of graphs written by ``tdmi-export onnx --split``, and OpenVINO the same pair exported with
``--deform-conv decomposed``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from tdmi.errors import BackendUnavailableError, ConfigError, DataError, ExportError

SPLIT_SUFFIXES = (".backbone.onnx", ".head.onnx")
HEAD_INPUTS = ("stage1", "stage2", "stage3", "stage4")


def split_paths(path: str | Path) -> tuple[Path, Path]:
    """The backbone and head files of a split export, from either of them or the ``-o`` name given."""
    p = Path(path)
    name = p.name
    for suffix in (*SPLIT_SUFFIXES, ".onnx"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + SPLIT_SUFFIXES[0]), p.with_name(name + SPLIT_SUFFIXES[1])


class FramePredictor(ABC):
    """Backbone once per crop, temporal head per clip; numpy float32 in and out."""

    backend: str = ""

    def __init__(self, config: Any) -> None:
        self.config = config

    def _check_crops(self, crops: np.ndarray) -> np.ndarray:
        h, w = self.config.input_size
        if crops.ndim != 4 or tuple(crops.shape[1:]) != (3, h, w):
            raise DataError(f"crops must be [N, 3, {h}, {w}] float32, got {tuple(crops.shape)}")
        return np.ascontiguousarray(crops, dtype=np.float32)

    def _check_stacks(self, stacks: list[np.ndarray]) -> list[np.ndarray]:
        if len(stacks) != 4 or any(s.ndim != 5 or s.shape[1] != self.config.num_frames for s in stacks):
            shapes = [tuple(s.shape) for s in stacks]
            raise DataError(
                f"the head takes 4 feature stacks [B, T={self.config.num_frames}, C, h, w], got {shapes}"
            )
        return [np.ascontiguousarray(s, dtype=np.float32) for s in stacks]

    @abstractmethod
    def frame_features(self, crops: np.ndarray) -> list[np.ndarray]:
        """``[N, 3, H, W]`` crops -> the four stage features, each ``[N, C_j, h, w]``."""

    @abstractmethod
    def head(self, stacks: list[np.ndarray]) -> np.ndarray:
        """Four ``[B, T, C_j, h, w]`` stacks -> ``[B, J, h, w]`` heatmaps."""

    def close(self) -> None:
        """Release the backend's resources."""
        self.closed = True


class TorchFramePredictor(FramePredictor):
    backend = "torch"

    def __init__(self, model: Any, device: str = "cpu") -> None:
        from tdmi.model.split import split_model

        super().__init__(model.config)
        self.device = device
        self._backbone, self._head = split_model(model)

    def frame_features(self, crops: np.ndarray) -> list[np.ndarray]:
        import torch

        x = torch.from_numpy(self._check_crops(crops)).to(self.device)
        with torch.inference_mode():
            return [f.float().cpu().numpy() for f in self._backbone(x)]

    def head(self, stacks: list[np.ndarray]) -> np.ndarray:
        import torch

        xs = [torch.from_numpy(s).to(self.device) for s in self._check_stacks(stacks)]
        with torch.inference_mode():
            return self._head(*xs).float().cpu().numpy()


class OnnxFramePredictor(FramePredictor):
    """The ``*.backbone.onnx`` / ``*.head.onnx`` pair on ONNX Runtime (CPU, or CUDA if installed)."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, device: str | None = None, threads: int | None = None) -> None:
        from tdmi.export.metadata import load_onnx_checked, read_metadata
        from tdmi.export.ort_ops import require_onnxruntime
        from tdmi.runtime.onnxruntime_backend import _providers

        ort = require_onnxruntime()
        bpath, hpath = split_paths(path)
        for p in (bpath, hpath):
            if not p.is_file():
                raise ExportError(
                    f"{p} not found: write the pair with `tdmi-export onnx --split -o {hpath.name[:-9]}.onnx`"
                )
        bmodel, hmodel = load_onnx_checked(bpath), load_onnx_checked(hpath)
        bmeta, hmeta = read_metadata(bmodel), read_metadata(hmodel)
        if bmeta["config"].to_dict() != hmeta["config"].to_dict():
            raise ExportError(f"{bpath} and {hpath} come from different model configs: re-export the pair")
        if (bmeta["extra"].get("split"), hmeta["extra"].get("split")) != ("backbone", "head"):
            raise ExportError(
                f"{bpath} / {hpath} are not a backbone/head pair from `tdmi-export onnx --split`"
            )
        super().__init__(bmeta["config"])
        providers, self.device = _providers(ort, device, False)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        try:
            self._bsess = ort.InferenceSession(bmodel.SerializeToString(), so, providers=providers)
            self._hsess = ort.InferenceSession(hmodel.SerializeToString(), so, providers=providers)
        except Exception as e:  # ORT's exception types are not importable in a stable way
            first = (str(e).splitlines() or [type(e).__name__])[0][:240]
            raise ExportError(
                f"ONNX Runtime cannot load the split pair {bpath.name}/{hpath.name}: {first}"
            ) from None
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
        from tdmi.export.metadata import parse_metadata  # tdmi.artifacts once the ground layer lands
        from tdmi.runtime.openvino_backend import (
            compile_properties,
            precision_name,
            read_model_checked,
            require_openvino,
            rt_metadata,
        )

        core = require_openvino().Core()
        bpath, hpath = split_paths(Path(path).with_suffix(".onnx") if str(path).endswith(".xml") else path)
        for p in (bpath, hpath):
            if not p.is_file():
                raise ExportError(
                    f"{p} not found: write the pair with `tdmi-export onnx --split --deform-conv decomposed "
                    f"-o {hpath.name[:-9]}.onnx`"
                )
        bmodel, hmodel = read_model_checked(core, bpath), read_model_checked(core, hpath)
        bmeta, hmeta = parse_metadata(rt_metadata(bmodel)), parse_metadata(rt_metadata(hmodel))
        if bmeta["config"].to_dict() != hmeta["config"].to_dict():
            raise ExportError(f"{bpath} and {hpath} come from different model configs: re-export the pair")
        if (bmeta["extra"].get("split"), hmeta["extra"].get("split")) != ("backbone", "head"):
            raise ExportError(
                f"{bpath} / {hpath} are not a backbone/head pair from `tdmi-export onnx --split`"
            )
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
    from tdmi.runtime.torch_backend import TorchPredictor

    if split is not None:
        if predictor.backend == "openvino":
            fp: FramePredictor = OpenVINOFramePredictor(split, threads=getattr(predictor, "threads", None))
        else:
            fp = OnnxFramePredictor(split, threads=None)
        if fp.config.to_dict() != predictor.config.to_dict():
            raise ConfigError(f"the split pair {split} was exported from another config than the predictor")
        return fp
    if isinstance(predictor, TorchPredictor):
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
