"""Held-out synthetic clips with exactly known joints, and decoding a backend's predictions on them.

The task-accuracy yardstick of ``tdmi-bench --accuracy synthetic`` and of the INT8 recipe search
(``tdmi-export int8-sensitivity``, ``--max-drop``): clips from a seed different from training's, so
synthetic-trained weights are not scored on what they saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tdmi.data.sample import sample_clips
from tdmi.data.transforms import heatmaps_to_keypoints
from tdmi.errors import DataError
from tdmi.eval.metrics import PCK_THRESHOLD, nonfinite_count
from tdmi.spec.config import TDMIConfig

HELDOUT_SEED = 12345  # tdmi.train.synthetic trains on seed 0 and checks on this one
DEFAULT_CLIPS = 64


@dataclass
class SyntheticSet:
    """Held-out clips with their true key-frame joints (image pixels) and the crops to decode into."""

    clips: np.ndarray  # [N, T, 3, H, W]
    keypoints: np.ndarray  # [N, J, 2] image pixels
    visible: np.ndarray  # [N, J] bool
    boxes: np.ndarray  # [N, 4] x, y, w, h
    centers: np.ndarray  # [N, 2]
    scales: np.ndarray  # [N, 2]
    seed: int

    @property
    def size(self) -> int:
        return int(self.clips.shape[0])

    def describe(self) -> dict[str, Any]:
        return {
            "source": "built-in synthetic moving-figure clips (tdmi.data.sample), known joints",
            "clips": self.size,
            "seed": self.seed,
            "visible_joints": int(self.visible.sum()),
            "pck_threshold": f"{PCK_THRESHOLD} x the longer side of the person box",
            "oks": "COCO formula, box area as scale; AP over OKS 0.50:0.05:0.95",
            "ci": "95 % bootstrap over clips; the drop's interval is paired (same resampled clips)",
        }


def synthetic_set(
    config: TDMIConfig, num_clips: int = DEFAULT_CLIPS, seed: int = HELDOUT_SEED
) -> SyntheticSet:
    if num_clips < 1:
        raise DataError(f"--accuracy-clips must be positive, got {num_clips}")
    clips, infos = sample_clips(num_clips, config.input_size, config.num_frames, seed=seed)
    return SyntheticSet(
        clips=clips,
        keypoints=np.stack([i.keypoints[:, :2] for i in infos]).astype(np.float64),
        visible=np.stack([i.keypoints[:, 2] > 0 for i in infos]),
        boxes=np.stack([np.asarray(i.crop.box_xywh, np.float64) for i in infos]),
        centers=np.stack([i.crop.center for i in infos]).astype(np.float32),
        scales=np.stack([i.crop.scale for i in infos]).astype(np.float32),
        seed=seed,
    )


def predict_keypoints(
    run: Callable[[np.ndarray], np.ndarray], data: SyntheticSet, batch: int = 1
) -> tuple[np.ndarray, np.ndarray, int]:
    """(keypoints [N, J, 2] image px, scores [N, J], non-finite heatmap values) from one backend.

    The last batch is padded to ``batch`` (fixed-batch graphs); padded outputs are dropped. A joint
    whose heatmap holds NaN/Inf is decoded as NaN (a miss), never as a lucky position.
    """
    kps, scs, bad = [], [], 0
    for start in range(0, data.size, batch):
        chunk = data.clips[start : start + batch]
        n = chunk.shape[0]
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        out = np.asarray(run(np.ascontiguousarray(chunk)), dtype=np.float32)[:n]
        if out.ndim != 4 or out.shape[0] != n:
            raise DataError(f"output shape {tuple(out.shape)} is not [{n}, J, h, w]")
        nonfinite = ~np.isfinite(out).all(axis=(2, 3))
        bad += nonfinite_count(out)
        clean = np.where(np.isfinite(out), out, 0.0).astype(np.float32)
        kp, sc = heatmaps_to_keypoints(
            clean, data.centers[start : start + n], data.scales[start : start + n], refine="quarter"
        )
        kp = kp.astype(np.float64)
        kp[nonfinite] = np.nan
        kps.append(kp)
        scs.append(sc.astype(np.float64))
    return np.concatenate(kps), np.concatenate(scs), bad
