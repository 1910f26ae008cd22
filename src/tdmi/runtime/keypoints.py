"""Frames + person boxes -> image keypoints: crop, batch, predict, (flip), decode."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tdmi.errors import DataError

if TYPE_CHECKING:  # base.Predictor.predict_keypoints calls this module: a type-only edge back
    from tdmi.runtime.base import Predictor


def predict_keypoints(
    predictor: Predictor,
    frames: Sequence[np.ndarray],
    boxes: Any,
    flip_test: bool = False,
    refine: str = "quarter",
    bgr: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints [N, J, 2] in image pixels and scores [N, J] for N people of the key frame.

    ``frames`` are the clip's T images (HxWx3 uint8, BGR as cv2 reads them unless ``bgr=False``),
    key frame in the middle; ``boxes`` [N, 4] are x, y, w, h of each person in the key frame. All
    frames are cropped with the key frame's box, as the model was trained.
    """
    from tdmi.data.transforms import (
        crop_clips,
        flip_clip,
        heatmaps_to_keypoints,
        merge_flip,
        stack_crop_infos,
    )

    cfg = predictor.config
    if len(frames) != cfg.num_frames:
        raise DataError(
            f"got {len(frames)} frames, the model takes clips of T={cfg.num_frames} (key frame in the middle)"
        )
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.shape == (4,):
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise DataError(f"boxes must be [N, 4] (x, y, w, h), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1)).tolist()
        raise DataError(f"boxes contain NaN or Inf (box index {rows[:8]}): pass x, y, w, h in pixels")
    if arr.shape[0] == 0:
        return np.zeros((0, cfg.num_joints, 2), np.float32), np.zeros((0, cfg.num_joints), np.float32)
    clips, infos = crop_clips(frames, arr, cfg.input_size, cfg.bbox_padding, bgr=bgr)
    heatmaps = predictor.predict(clips)
    if flip_test:
        heatmaps = merge_flip(heatmaps, predictor.predict(flip_clip(clips)))
    centers, scales = stack_crop_infos(infos)
    return heatmaps_to_keypoints(heatmaps, centers, scales, refine=refine, sigma=cfg.sigma)  # type: ignore[arg-type]  # str from the CLI
