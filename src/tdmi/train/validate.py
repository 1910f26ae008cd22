"""Periodic validation: PoseTrack mAP with the project's poseval evaluator, or synthetic-clip PCK."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from tdmi.data.annotations import Person, Split
from tdmi.data.posetrack import FrameCache, Sample, iter_samples
from tdmi.data.sample import sample_clips
from tdmi.data.transforms import affine_transform_points, crop_clip, get_max_preds, heatmaps_to_keypoints
from tdmi.errors import DataError
from tdmi.eval import evaluate_frames
from tdmi.spec.choices import MissingFrames
from tdmi.spec.config import TDMIConfig


@torch.no_grad()
def _predict(model: nn.Module, clips: np.ndarray, device: torch.device, batch: int) -> np.ndarray:
    model.eval()
    outs = [
        model(torch.from_numpy(clips[k : k + batch]).to(device)).float().cpu().numpy()
        for k in range(0, len(clips), batch)
    ]
    return np.concatenate(outs)


def posetrack_map(
    model: nn.Module,
    config: TDMIConfig,
    split: Split,
    missing: MissingFrames,
    device: torch.device,
    batch: int = 8,
) -> dict[str, float]:
    """mAP (poseval 'Total') of GT-box predictions on every labelled frame of ``split``."""
    samples: list[Sample] = list(iter_samples(split, "gt"))
    if not samples:
        raise DataError(f"the validation split {split.name} has no labelled person boxes")
    cache = FrameCache()
    per_image: dict[int, list[Person]] = {}
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        clips = np.empty((len(chunk), config.num_frames, 3, *config.input_size), dtype=np.float32)
        centers = np.empty((len(chunk), 2), dtype=np.float32)
        scales = np.empty((len(chunk), 2), dtype=np.float32)
        for i, s in enumerate(chunk):
            frames = [cache.get(p) for p in s.clip_paths(config.num_frames, missing)]
            clips[i], info = crop_clip(frames, s.bbox_xywh, config.input_size, padding=config.bbox_padding)
            centers[i], scales[i] = info.center, info.scale
        heat = _predict(model, clips, device, batch)
        kp, sc = heatmaps_to_keypoints(heat, centers, scales, refine="quarter")
        for i, s in enumerate(chunk):
            people = per_image.setdefault(s.frame.image_id, [])
            people.append(
                Person(
                    keypoints=np.concatenate([kp[i], sc[i, :, None]], axis=1).astype(np.float64),
                    keypoint_scores=sc[i].astype(np.float64),
                    labeled=np.ones(config.num_joints, dtype=bool),
                    bbox_xywh=np.asarray(s.bbox_xywh, dtype=np.float64),
                    score=1.0,
                    track_id=len(people),
                )
            )
    pairs = [
        (frame, per_image.get(frame.image_id, []))
        for video in split.videos
        for frame in video.frames
        if frame.is_labeled
    ]
    result = evaluate_frames(pairs, {"videos": len(split.videos)})
    return {"val_map": float(result.total), "val_samples": float(len(samples))}


def synthetic_pck(
    model: nn.Module,
    config: TDMIConfig,
    n: int = 16,
    seed: int = 12345,
    batch: int = 4,
    radius: float = 2.0,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Held-out synthetic clips (another seed than training): argmax-within-``radius`` rate and peak height.

    ``pck`` is the fraction of labelled joints whose integer heatmap argmax lies within ``radius``
    heatmap pixels of the true joint.
    """
    clips, infos = sample_clips(n, config.input_size, config.num_frames, seed=seed)
    hm = _predict(model, clips, torch.device(device), batch)
    preds, maxvals = get_max_preds(hm)
    truth = joints_in_heatmap(infos, config)
    vis = np.stack([i.keypoints[:, 2] > 0 for i in infos])
    dist = np.linalg.norm(preds - truth, axis=-1)
    return {
        "pck": float((dist[vis] <= radius).mean()),
        "mean_dist_px": float(dist[vis].mean()),
        "peak_mean": float(maxvals[..., 0][vis].mean()),
        "peak_median": float(np.median(maxvals[..., 0][vis])),
        "clips": float(n),
    }


def joints_in_heatmap(infos: Sequence[object], config: TDMIConfig) -> np.ndarray:
    hm_h, hm_w = config.heatmap_size
    pts = [
        affine_transform_points(i.keypoints[:, :2], i.crop.transform(output_size=(hm_h, hm_w)))  # type: ignore[attr-defined]  # infos are TrainItem.info records, typed object by the collate
        for i in infos
    ]
    return np.stack(pts)
