"""Run TDMI over a whole video: a clip per track around every key frame, decoded to image keypoints.

Clip-by-clip, every clip's T frames go through the backbone (T backbone passes per person-frame).
With ``reuse_features`` each track keeps a small ring buffer of per-frame backbone features keyed by
(frame, crop box), so a frame cropped the same way is computed once and reused by every clip that
contains it; the temporal head still runs once per clip. With the ``key`` policy (all frames cropped
with the key frame's box, as in training) this is exact but only hits where boxes repeat (e.g.
``--full-frame``); ``frame``/``smoothed`` crop each frame with its own (smoothed) box, so the cache
always hits, at an accuracy cost measured in BENCHMARKS.md.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tdmi.data.transforms import CropInfo, clip_indices, crop_clip, heatmaps_to_keypoints, key_frame_position
from tdmi.errors import ConfigError, DataError
from tdmi.spec.choices import BOX_POLICIES, BoxPolicy
from tdmi.spec.decoding import Refine
from tdmi.video.boxes import BoxTrack, check_frames_exist
from tdmi.video.source import VideoSource

SMOOTH_RADIUS = 2  # frames each side of the centred moving average of the ``smoothed`` policy


@dataclass
class PersonPose:
    frame: int
    track_id: int
    keypoints: np.ndarray  # [J, 2] image pixels
    scores: np.ndarray  # [J]
    box: np.ndarray  # [4] the key frame's crop box, x, y, w, h
    box_score: float = 1.0


@dataclass
class InferResult:
    poses: list[PersonPose]
    num_frames: int
    num_tracks: int
    clips: int
    backbone_passes: int
    cache_lookups: int
    cache_hits: int
    wall_s: float
    reuse_features: bool
    box_policy: str
    backend: str
    config: Any
    width: int
    height: int
    fps: float
    heatmaps: list[np.ndarray] = field(default_factory=list)  # kept only when asked (tests, benchmarks)
    extra: dict[str, Any] = field(default_factory=dict)  # run facts added by callers (detector, live)

    @property
    def hit_rate(self) -> float:
        return self.cache_hits / self.cache_lookups if self.cache_lookups else 0.0

    @property
    def frames_per_s(self) -> float:
        return self.num_frames / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """What the JSON and the CLI report about the run."""
        return {
            "frames": self.num_frames,
            "persons": self.num_tracks,
            "poses": len(self.poses),
            "clips": self.clips,
            "backbone_passes": self.backbone_passes,
            "backbone_passes_clip_by_clip": self.clips * self.config.num_frames,
            "reuse_features": self.reuse_features,
            "cache_hit_rate": round(self.hit_rate, 4) if self.reuse_features else None,
            "box_policy": self.box_policy,
            "backend": self.backend,
            "wall_s": round(self.wall_s, 3),
            "frames_per_s": round(self.frames_per_s, 3),
            **self.extra,
        }


def smoothed_boxes(track: BoxTrack, radius: int = SMOOTH_RADIUS) -> dict[int, np.ndarray]:
    """Centred moving average of the track's box (centre and size), over the frames it has."""
    if track.fill_box is not None or not track.boxes:
        return {}
    frames = sorted(track.boxes)
    arr = np.stack([track.boxes[f] for f in frames])
    cs = np.concatenate([arr[:, :2] + arr[:, 2:] / 2, arr[:, 2:]], axis=1)
    out = {}
    for i, f in enumerate(frames):
        m = cs[max(0, i - radius) : i + radius + 1].mean(axis=0)
        out[f] = np.array([m[0] - m[2] / 2, m[1] - m[3] / 2, m[2], m[3]])
    return out


class _Crops:
    """Crop boxes per clip frame under a policy."""

    def __init__(self, tracks: list[BoxTrack], policy: str) -> None:
        if policy not in BOX_POLICIES:
            raise ConfigError(f"unknown box policy {policy!r}: choose one of {', '.join(BOX_POLICIES)}")
        self.policy = policy
        self.smooth = {t.track_id: smoothed_boxes(t) for t in tracks} if policy == "smoothed" else {}

    def boxes(self, track: BoxTrack, key: int, indices: list[int]) -> list[np.ndarray]:
        if track.fill_box is not None or self.policy == "key":
            return [track.box(key)] * len(indices)
        if self.policy == "frame":
            return [track.nearest_box(i) for i in indices]
        sm = self.smooth[track.track_id]
        return [sm[min(max(i, track.first), track.last)] for i in indices]


class FeatureCache:
    """Per-track ring buffer of per-frame backbone features keyed by (frame, crop box)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._store: dict[int, OrderedDict[tuple[Any, ...], list[np.ndarray]]] = {}
        self.lookups = 0
        self.hits = 0

    def get(self, track_id: int, key: tuple[Any, ...]) -> list[np.ndarray] | None:
        self.lookups += 1
        ring = self._store.get(track_id)
        if ring is not None and key in ring:
            self.hits += 1
            return ring[key]
        return None

    def put(self, track_id: int, key: tuple[Any, ...], feats: list[np.ndarray]) -> None:
        ring = self._store.setdefault(track_id, OrderedDict())
        ring[key] = feats
        while len(ring) > self.capacity:
            ring.popitem(last=False)

    def drop_finished(self, live: set[int]) -> None:
        for tid in [t for t in self._store if t not in live]:
            del self._store[tid]


FrameSink = Callable[[int, np.ndarray, list[PersonPose]], None]


def _crop(img: np.ndarray, box: np.ndarray, cfg: Any) -> tuple[np.ndarray, CropInfo]:
    clip, info = crop_clip([img], box, cfg.input_size, cfg.bbox_padding)
    return clip[0], info


def run_video(
    source: VideoSource,
    tracks: list[BoxTrack],
    predictor: Any,
    *,
    frame_predictor: Any | None = None,
    box_policy: BoxPolicy = "key",
    refine: Refine = "quarter",
    sink: FrameSink | None = None,
    progress: Callable[[int], None] | None = None,
    keep_heatmaps: bool = False,
) -> InferResult:
    """Pose-track ``source``: one clip per track per key frame; ``frame_predictor`` turns on feature reuse.

    ``predictor`` is any :class:`tdmi.runtime.Predictor` (clip-by-clip); with ``frame_predictor`` (a
    :class:`tdmi.runtime.features.FramePredictor`) clips are assembled from cached per-frame features.
    ``sink(frame_index, image, poses)`` sees every frame in order once its poses are known.
    """
    run = _KeyFrames(tracks, predictor, frame_predictor, box_policy, refine, keep_heatmaps)
    if source.kind == "frames" and source.num_frames is not None:
        check_frames_exist(tracks, source.num_frames)
    t0 = time.perf_counter()

    def done(key: int) -> None:
        if sink is not None:
            sink(key, run.buffer[key], run.frame_poses)
        run.forget_before(key)
        if progress is not None:
            progress(key + 1)

    next_key = 0
    count = 0
    for i, img in enumerate(source.frames()):
        run.buffer[i] = img
        count = i + 1
        while next_key + run.after <= i:  # the key frame's clip is complete: its poses go out now
            run.process(next_key, i + 1)
            done(next_key)
            next_key += 1
    if count == 0:
        raise DataError(f"{source.path}: no frames could be decoded")
    # Boxes on frames the container declares but that were lost (--allow-short) are not another
    # video's: the reader already reported those frames; only boxes past the declared end are.
    check_frames_exist(tracks, max(count, source.num_frames or 0))
    while next_key < count:  # the last key frames: their clips repeat the last frame
        run.process(next_key, count)
        done(next_key)
        next_key += 1
    return run.result(source, count, time.perf_counter() - t0)


class _KeyFrames:
    """The state of one pose-tracking pass: the frames still needed, the feature cache, the poses.

    Kept apart from the frame loop of :func:`run_video` so that the loop reads as "buffer, process
    each key frame whose clip is complete, hand it on".
    """

    def __init__(
        self,
        tracks: list[BoxTrack],
        predictor: Any,
        frame_predictor: Any | None,
        box_policy: BoxPolicy,
        refine: Refine,
        keep_heatmaps: bool,
    ) -> None:
        self.tracks, self.predictor = tracks, predictor
        self.runner = frame_predictor if frame_predictor is not None else predictor
        self.cfg = self.runner.config
        self.t_len = self.cfg.num_frames
        self.half = key_frame_position(self.t_len)
        self.after = self.t_len - 1 - self.half  # frames past the key frame its clip needs
        self.crops = _Crops(tracks, box_policy)
        self.box_policy, self.refine, self.keep_heatmaps = box_policy, refine, keep_heatmaps
        self.cache = FeatureCache(capacity=2 * self.t_len) if frame_predictor is not None else None
        self.poses: list[PersonPose] = []
        self.frame_poses: list[PersonPose] = []  # the last processed key frame's
        self.heatmaps: list[np.ndarray] = []
        self.buffer: dict[int, np.ndarray] = {}
        self.clips = self.passes = 0

    def process(self, key: int, length: int) -> None:
        """Poses of every track present at ``key`` from its clip (``length``: frames decoded so far)."""
        idx = clip_indices(key, self.t_len, length)
        active = [t for t in self.tracks if t.has(key)]
        self.frame_poses = []
        if active:
            boxes = [self.crops.boxes(t, key, idx) for t in active]
            if self.cache is None:
                hm, infos = _run_clips(self.predictor, self.buffer, idx, boxes, self.cfg)
                self.passes += len(active) * self.t_len
            else:
                hm, infos, misses = _run_reuse(
                    self.runner, self.cache, self.buffer, idx, boxes, active, self.cfg
                )
                self.passes += misses
            self.clips += len(active)
            centers = np.stack([i.center for i in infos])
            scales = np.stack([i.scale for i in infos])
            kps, scs = heatmaps_to_keypoints(hm, centers, scales, refine=self.refine, sigma=self.cfg.sigma)
            for n, t in enumerate(active):
                self.frame_poses.append(
                    PersonPose(key, t.track_id, kps[n], scs[n], boxes[n][self.half], t.score(key))
                )
            if self.keep_heatmaps:
                self.heatmaps.append(hm)
            if self.cache is not None:
                live = {t.track_id for t in self.tracks if t.has(key + 1)} | {t.track_id for t in active}
                self.cache.drop_finished(live)
        self.poses.extend(self.frame_poses)

    def forget_before(self, key: int) -> None:
        """Drop the frames no later clip reads (the next key frame's clip starts at key + 1 - half)."""
        for old in [i for i in self.buffer if i < key + 1 - self.half]:
            del self.buffer[old]

    def result(self, source: VideoSource, count: int, wall_s: float) -> InferResult:
        cache = self.cache
        return InferResult(
            poses=self.poses,
            num_frames=count,
            num_tracks=len({p.track_id for p in self.poses}),
            clips=self.clips,
            backbone_passes=self.passes,
            cache_lookups=cache.lookups if cache else 0,
            cache_hits=cache.hits if cache else 0,
            wall_s=wall_s,
            reuse_features=cache is not None,
            box_policy=self.box_policy,
            backend=self.runner.backend,
            config=self.cfg,
            width=source.width,
            height=source.height,
            fps=source.fps,
            heatmaps=self.heatmaps,
        )


def _run_clips(
    predictor: Any, frames: dict[int, np.ndarray], idx: list[int], boxes: list[list[np.ndarray]], cfg: Any
) -> tuple[np.ndarray, list[CropInfo]]:
    h, w = cfg.input_size
    clips = np.empty((len(boxes), len(idx), 3, h, w), dtype=np.float32)
    infos: list[CropInfo] = []
    half = key_frame_position(len(idx))
    for n, bs in enumerate(boxes):
        for j, (fi, b) in enumerate(zip(idx, bs, strict=True)):
            clips[n, j], info = _crop(frames[fi], b, cfg)
            if j == half:
                infos.append(info)
    return np.asarray(predictor.predict(clips)), infos


def _run_reuse(
    runner: Any,
    cache: FeatureCache,
    frames: dict[int, np.ndarray],
    idx: list[int],
    boxes: list[list[np.ndarray]],
    active: list[BoxTrack],
    cfg: Any,
) -> tuple[np.ndarray, list[CropInfo], int]:
    half = key_frame_position(len(idx))
    infos: list[CropInfo] = []
    table: list[list[Any]] = []
    todo: dict[tuple[int, tuple[Any, ...]], np.ndarray] = {}
    for t, bs in zip(active, boxes, strict=True):
        row = []
        for j, (fi, b) in enumerate(zip(idx, bs, strict=True)):
            key = (fi, tuple(float(v) for v in b))
            feats = cache.get(t.track_id, key)
            if feats is None and (t.track_id, key) in todo:
                cache.hits += 1  # the same frame twice in one clip (clamped ends): computed once
            if j == half:
                crop, info = _crop(frames[fi], b, cfg)
                infos.append(info)
                if feats is None and (t.track_id, key) not in todo:
                    todo[(t.track_id, key)] = crop
            elif feats is None and (t.track_id, key) not in todo:
                todo[(t.track_id, key)] = _crop(frames[fi], b, cfg)[0]
            row.append(feats if feats is not None else (t.track_id, key))
        table.append(row)
    if todo:
        keys = list(todo)
        out = runner.frame_features(np.stack([todo[k] for k in keys]))
        for n, (tid, key) in enumerate(keys):
            cache.put(tid, key, [f[n] for f in out])
        fresh = {k: [f[n] for f in out] for n, k in enumerate(keys)}
    else:
        fresh = {}
    stacks = []
    for s in range(4):
        stacks.append(
            np.stack([np.stack([(c if isinstance(c, list) else fresh[c])[s] for c in row]) for row in table])
        )
    return runner.head(stacks), infos, len(todo)
