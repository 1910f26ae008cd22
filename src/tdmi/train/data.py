"""Training clips: PoseTrack GT-box clips with clip-consistent augmentation, and synthetic figures.

Every random choice of a sample comes from a generator seeded by (run seed, epoch, sample index),
never from global state, so the data a step sees depends only on the step: worker processes,
the number of ranks and resuming mid-epoch cannot change it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from tdmi.data.annotations import Split
from tdmi.data.posetrack import FrameCache, iter_samples, load_split
from tdmi.data.sample import SampleClipInfo, sample_clips
from tdmi.data.targets import gaussian_heatmap
from tdmi.data.transforms import (
    PIXEL_STD,
    affine_transform_points,
    box_to_center_scale,
    get_affine_transform,
    normalize,
)
from tdmi.errors import DataError
from tdmi.spec.choices import MissingFrames
from tdmi.spec.config import TDMIConfig
from tdmi.spec.joints import flip_permutation
from tdmi.train.config import TrainConfig

Item = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # clip [T,3,H,W], target [J,h,w], weight [J,1]

# Canonical HRNet half-body split (PoseTrack order): head and arms vs hips and legs.
UPPER_BODY = tuple(range(0, 11))
LOWER_BODY = tuple(range(11, 17))


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample in one epoch (independent streams, cheap to make)."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


def heatmap_targets(infos: Sequence[SampleClipInfo], config: TDMIConfig) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian targets [N, J, h, w] and weights [N, J, 1]: the known key-frame joints in heatmap pixels."""
    hm_h, hm_w = config.heatmap_size
    targets = np.zeros((len(infos), config.num_joints, hm_h, hm_w), dtype=np.float32)
    weights = np.zeros((len(infos), config.num_joints, 1), dtype=np.float32)
    for i, info in enumerate(infos):
        trans = info.crop.transform(output_size=(hm_h, hm_w))
        xy = affine_transform_points(info.keypoints[:, :2], trans)
        targets[i], weights[i, :, 0] = gaussian_heatmap(xy, info.keypoints[:, 2], (hm_h, hm_w), config.sigma)
    return targets, weights


class SyntheticClips(Dataset[Item]):
    """The moving-figure clips of :mod:`tdmi.data.sample` with exact targets (no augmentation needed).

    ``fresh=False``: a fixed pool of ``pool`` clips, drawn once from ``seed``. ``fresh=True``: every
    epoch draws ``pool`` new clips, so no batch is ever repeated (clip i of epoch e from its own seed).
    """

    def __init__(self, config: TDMIConfig, pool: int, seed: int = 0, fresh: bool = False) -> None:
        self.config, self.pool, self.seed, self.fresh = config, pool, seed, fresh
        self.epoch = 0
        if not fresh:
            clips, infos = sample_clips(pool, config.input_size, config.num_frames, seed=seed)
            targets, weights = heatmap_targets(infos, config)
            self._clips, self._targets, self._weights = (
                torch.from_numpy(a) for a in (clips, targets, weights)
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.pool

    def __getitem__(self, index: int) -> Item:
        if not self.fresh:
            return self._clips[index], self._targets[index], self._weights[index]
        seed = int(sample_rng(self.seed, self.epoch, index).integers(0, 2**31))
        clips, infos = sample_clips(1, self.config.input_size, self.config.num_frames, seed=seed)
        targets, weights = heatmap_targets(infos, self.config)
        return torch.from_numpy(clips[0]), torch.from_numpy(targets[0]), torch.from_numpy(weights[0])


@dataclass(frozen=True)
class ClipRecord:
    """One GT person on one labelled key frame, with its clip's frame files."""

    paths: tuple[Path, ...]
    box_xywh: np.ndarray
    keypoints: np.ndarray  # [J, 2] image pixels
    labeled: np.ndarray  # [J] float32 (1 = labelled)


def _missing_hint(e: DataError) -> DataError:
    if "missing='nearest'" in str(e):
        return DataError(f"{e} (tdmi-train: --missing-frames nearest)")
    return e


def load_records(
    data: str | Path, split: str, num_frames: int, missing: MissingFrames
) -> tuple[Split, list[ClipRecord]]:
    """Read a split's GT boxes and check every clip's frames exist now, not halfway through training."""
    root = Path(data)
    if not root.exists():
        raise DataError(
            f"PoseTrack data {root} does not exist: pass the dataset root (with annotations/{split}/)"
        )
    if root.is_dir() and (root / "annotations").is_dir() and not (root / "annotations" / split).is_dir():
        have = sorted(p.name for p in (root / "annotations").iterdir() if p.is_dir())
        raise DataError(
            f"{root} has no annotations/{split}/ split (found: {', '.join(have) or 'none'}); "
            "choose one with --split / --val-split"
        )
    the_split = load_split(root, split)
    records: list[ClipRecord] = []
    for s in iter_samples(the_split, "gt"):
        assert s.person is not None
        try:
            paths = s.clip_paths(num_frames, missing)
        except DataError as e:
            raise _missing_hint(e) from None
        records.append(
            ClipRecord(
                paths=tuple(paths),
                box_xywh=np.asarray(s.bbox_xywh, dtype=np.float64),
                keypoints=np.asarray(s.person.keypoints[:, :2], dtype=np.float64),
                labeled=s.person.labeled.astype(np.float32),
            )
        )
    if not records:
        raise DataError(f"{root} ({split}) has no labelled person boxes to train on")
    return the_split, records


def _half_body(
    joints: np.ndarray, labeled: np.ndarray, aspect: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """Centre and scale of the upper or lower body only (canonical HRNet ``half_body_transform``)."""
    upper = [j for j in UPPER_BODY if j < len(labeled) and labeled[j] > 0]
    lower = [j for j in LOWER_BODY if j < len(labeled) and labeled[j] > 0]
    chosen = upper if (rng.random() < 0.5 and len(upper) > 2) else (lower or upper)
    if len(chosen) < 2:
        return None
    pts = joints[chosen]
    center = pts.mean(axis=0).astype(np.float32)
    w, h = pts.max(axis=0) - pts.min(axis=0)
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    if w <= 0 or h <= 0:
        return None
    return center, np.array([w / PIXEL_STD, h / PIXEL_STD], dtype=np.float32) * np.float32(1.5)


class PoseTrackClips(Dataset[Item]):
    """GT-box clips of a PoseTrack split, cropped as in evaluation, augmented identically per clip.

    Augmentation (``augment=True``): random scale, rotation, horizontal flip with left/right joint
    swap and half-body crops, all drawn once per clip and applied to every frame with one affine
    map, so the temporal differences still see the person's motion and not a jittering crop.
    """

    def __init__(
        self, records: Sequence[ClipRecord], config: TDMIConfig, train: TrainConfig, augment: bool = True
    ) -> None:
        self.records = list(records)
        self.config, self.train, self.augment = config, train, augment
        self.epoch = 0
        self._cache = FrameCache()
        self._perm = np.asarray(flip_permutation(config.num_joints))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Item:
        rec = self.records[index]
        cfg, tc = self.config, self.train
        in_h, in_w = cfg.input_size
        frames = [self._cache.get(p) for p in rec.paths]
        fw = frames[0].shape[1]
        joints, labeled = rec.keypoints.copy(), rec.labeled.copy()
        center, scale = box_to_center_scale(rec.box_xywh, cfg.aspect_ratio, cfg.bbox_padding)
        rot, flip = 0.0, False
        if self.augment:
            rng = sample_rng(tc.seed, self.epoch, index)
            half = tc.half_body_prob > 0 and labeled.sum() > tc.half_body_min_joints
            if half and rng.random() < tc.half_body_prob:
                hb = _half_body(joints, labeled, cfg.aspect_ratio, rng)
                if hb is not None:
                    center, scale = hb
            sf, rf = tc.scale_factor, tc.rotation_factor
            scale = scale * np.float32(np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf))
            r = float(np.clip(rng.standard_normal() * rf, -2 * rf, 2 * rf))
            rot = r if rng.random() < tc.rotation_prob else 0.0
            flip = bool(tc.flip and rng.random() < 0.5)
        # Flip = mirror the frame (x -> fw - 1 - x), then the usual crop around the mirrored centre.
        mirror = np.array([[-1.0, 0.0, fw - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        if flip:
            center = np.array([fw - 1 - center[0], center[1]], dtype=np.float32)

        def affine(out_w: int, out_h: int) -> np.ndarray:
            t = np.vstack([get_affine_transform(center, scale, (out_w, out_h), rot=rot), [0.0, 0.0, 1.0]])
            return (t @ mirror)[:2] if flip else t[:2]

        trans = affine(in_w, in_h)
        crops = np.stack([cv2.warpAffine(f, trans, (in_w, in_h), flags=cv2.INTER_LINEAR) for f in frames])
        clip = normalize(np.ascontiguousarray(crops[..., ::-1]))  # BGR -> RGB
        hm_h, hm_w = cfg.heatmap_size
        xy = affine_transform_points(joints, affine(hm_w, hm_h))
        if flip:  # the mirrored person's left joints are its right ones
            xy, labeled = xy[self._perm], labeled[self._perm]
        target, weight = gaussian_heatmap(xy, labeled, (hm_h, hm_w), cfg.sigma)
        return torch.from_numpy(clip), torch.from_numpy(target), torch.from_numpy(weight[:, None])


class StepBatchSampler(Sampler[list[int]]):
    """This rank's share of each global batch, in an order fixed by (seed, epoch).

    The epoch's order is a :class:`DistributedSampler` permutation; with W ranks, rank r takes every
    W-th index, so one step's W rank batches together are exactly the global batch a single process
    would take. ``start`` skips the first steps of the epoch (resume) without loading their data.
    """

    def __init__(self, dataset: Dataset[Item], global_batch: int, world: int, rank: int, seed: int) -> None:
        if global_batch % world:
            raise DataError(f"the global batch {global_batch} is not divisible by the {world} processes")
        n = len(dataset)  # type: ignore[arg-type]  # torch types Dataset without __len__; ours are sized
        if n < global_batch:
            raise DataError(
                f"the training data has {n} clips, fewer than one global batch of {global_batch}: "
                "lower --batch-size (or use more data)"
            )
        self.sampler: DistributedSampler[int] = DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.local_batch = global_batch // world
        self.start = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.num_samples // self.local_batch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.start = start

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.sampler)
        b = self.local_batch
        for k in range(self.start, self.steps_per_epoch):
            yield order[k * b : (k + 1) * b]


def micro_batches(n: int, accum: int) -> list[slice]:
    """Strided split of a rank batch: micro-batch m of 1 process = rank m of ``accum`` processes."""
    if n % accum:
        raise DataError(f"a batch of {n} does not split into {accum} micro-batches")
    return [slice(m, n, accum) for m in range(accum)]
