"""The one predictor interface every backend implements: clips in, heatmaps out, checked both ways."""

from __future__ import annotations

import sys
import warnings
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any

import numpy as np

from tdmi.errors import ConfigError, DataError, NonFiniteOutputWarning, TdmiError
from tdmi.runtime.chunking import plan_chunks


def is_torch_tensor(x: Any) -> bool:
    """True for a torch tensor, without importing torch for numpy callers."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def validate_clips(clips: Any, config: Any) -> None:
    """Clips must be float32 ``[B, T, 3, H, W]`` for the artifact's config; say exactly what differs."""
    t, (h, w) = config.num_frames, config.input_size
    expected = f"[B, {t}, 3, {h}, {w}] float32"
    if not (isinstance(clips, np.ndarray) or is_torch_tensor(clips)):
        raise DataError(f"clips must be a numpy array or torch tensor {expected}, got {type(clips).__name__}")
    shape = tuple(int(d) for d in clips.shape)
    if len(shape) != 5:
        raise DataError(f"clips must be {expected}, got rank {len(shape)} shape {shape}")
    if shape[1] != t:
        raise DataError(
            f"clips must have T={t} frames (the model's num_frames), got {shape[1]}: shape {shape}"
        )
    if shape[2] != 3:
        raise DataError(f"clips must have 3 colour channels at axis 2, got {shape[2]}: shape {shape}")
    if shape[3:] != (h, w):
        raise DataError(f"clips must be {h}x{w} (HxW, the model's input_size), got {shape[3]}x{shape[4]}")
    dtype = str(clips.dtype).replace("torch.", "")
    if dtype != "float32":
        raise DataError(f"clips must be float32 (normalised with tdmi.data.transforms), got {dtype}")
    bad = nonfinite_items(clips)
    if bad:
        # NaN reaches DeformConv's sampling offsets: torchvision crashes the process, ORT returns NaN.
        raise DataError(
            f"clips contain NaN or Inf values (clip index {_indices(bad)} of {shape[0]}): "
            "check the decoded frames and the normalisation; nothing was run"
        )


def nonfinite_items(x: Any) -> list[int]:
    """Indices along axis 0 of the items holding any NaN/Inf (numpy or torch, on any device)."""
    if x.shape[0] == 0:
        return []
    if is_torch_tensor(x):
        import torch

        ok = torch.isfinite(x).reshape(x.shape[0], -1).all(dim=1).cpu().numpy()
    else:
        ok = np.isfinite(np.asarray(x)).reshape(x.shape[0], -1).all(axis=1)
    return [int(i) for i in np.flatnonzero(~ok)]


def _indices(items: list[int], limit: int = 8) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return ", ".join(map(str, items[:limit])) + more


class Predictor(ABC):
    """Heatmaps for ``[B, T, 3, H, W]`` clips; numpy in -> numpy out, torch in -> torch out (same device)."""

    backend: str = ""

    def __init__(
        self,
        config: Any,
        *,
        precision: str = "fp32",
        device: str = "cpu",
        min_batch: int = 1,
        max_batch: int | None = None,
        source: str = "",
    ) -> None:
        self.config = config
        self.precision = precision
        self.device = device
        self.min_batch = min_batch
        self.max_batch = max_batch
        self.source = source
        self._closed = False
        plan_chunks(0, max_batch, min_batch)  # validates the range

    # -- description -----------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """One clip: (T, 3, H, W)."""
        h, w = self.config.input_size
        return (self.config.num_frames, 3, h, w)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """One clip's heatmaps: (J, H/4, W/4)."""
        return (self.config.num_joints, *self.config.heatmap_size)

    def __repr__(self) -> str:
        rng = f"{self.min_batch}..{self.max_batch if self.max_batch else 'any'}"
        return (
            f"<{type(self).__name__} {self.config.name} backend={self.backend} precision={self.precision} "
            f"device={self.device} batch={rng}>"
        )

    # -- running ---------------------------------------------------------------------------------
    def predict(self, clips: Any) -> Any:
        if self._closed:
            raise TdmiError(f"{self.backend} predictor for {self.source or self.config.name} is closed")
        validate_clips(clips, self.config)
        torch_in = is_torch_tensor(clips)
        n = int(clips.shape[0])
        outs: list[Any] = []  # numpy arrays or torch tensors, as the clips came
        for chunk in plan_chunks(n, self.max_batch, self.min_batch):
            x = clips[chunk.start : chunk.stop]
            if chunk.padding:
                x = self._pad(x, chunk.padding, torch_in)
            y = self._run_torch(x) if torch_in else self._run_numpy(np.ascontiguousarray(x))
            self._check_output(y, chunk.run_size)
            outs.append(y[: chunk.size])
            bad = [chunk.start + i for i in nonfinite_items(y[: chunk.size])]
            if bad:
                warnings.warn(
                    f"{self.backend} {self.precision} ({self.source or self.config.name}) returned NaN/Inf "
                    f"heatmaps for clip index {_indices(bad)} of {n} (finite input): FP16 overflow or broken "
                    "weights; their keypoints are meaningless",
                    NonFiniteOutputWarning,
                    stacklevel=2,
                )
        if torch_in:
            import torch

            if not outs:
                return torch.empty((0, *self.output_shape), dtype=torch.float32, device=clips.device)
            return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
        if not outs:
            return np.empty((0, *self.output_shape), dtype=np.float32)
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    __call__ = predict

    def predict_keypoints(
        self, frames: Any, boxes: Any, flip_test: bool = False, refine: str = "quarter", bgr: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Image keypoints [N, J, 2] and scores [N, J]; see :func:`tdmi.runtime.predict_keypoints`."""
        from tdmi.runtime.keypoints import predict_keypoints

        return predict_keypoints(self, frames, boxes, flip_test=flip_test, refine=refine, bgr=bgr)

    @staticmethod
    def _pad(x: Any, extra: int, torch_in: bool) -> Any:
        if torch_in:
            import torch

            return torch.cat([x, x[-1:].expand(extra, *x.shape[1:])], dim=0)
        return np.concatenate([x, np.repeat(x[-1:], extra, axis=0)], axis=0)

    def _check_output(self, y: Any, batch: int) -> None:
        want = (batch, *self.output_shape)
        got = tuple(int(d) for d in y.shape)
        if got != want:
            raise ConfigError(
                f"{self.backend} artifact {self.source or self.config.name} returned heatmaps {got}, its "
                f"config says {want}: the artifact and its embedded config disagree; re-export it"
            )

    @abstractmethod
    def _run_numpy(self, x: np.ndarray) -> np.ndarray:
        """One chunk, within the batch range, numpy float32 in and out."""

    def _run_torch(self, x: Any) -> Any:
        """Default for host backends: through numpy, result back on the input's device."""
        import torch

        out = self._run_numpy(np.ascontiguousarray(x.detach().cpu().numpy()))
        return torch.from_numpy(out).to(x.device)

    # -- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Predictor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


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
