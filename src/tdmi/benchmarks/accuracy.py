"""PoseTrack accuracy of every backend: same crops, same decoding, official-layout prediction files.

Each labelled key frame's people are cropped once (T-frame clips, the key frame's box), and every
backend predicts the same batch; so mAP differences between backends come from the backends alone.
Predictions are written one JSON per video (PoseTrack18 form) and scored with ``tdmi.eval``,
exactly as a user would score their own prediction folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tdmi.benchmarks.latency import Runner
from tdmi.data.posetrack import (
    FrameCache,
    MissingFrames,
    Person,
    Sample,
    Split,
    iter_samples,
    load_annotation_file,
    load_detections,
    load_split,
)
from tdmi.data.transforms import crop_clip, heatmaps_to_keypoints
from tdmi.errors import DataError
from tdmi.eval import EvalResult, evaluate, evaluate_frames, write_predictions
from tdmi.eval.metrics import coords_agreement, heatmap_coords, nonfinite_count
from tdmi.spec.config import TDMIConfig

Advance = Callable[[str, int], None]


@dataclass
class PoseTrackData:
    """The split, its person boxes and what they are (for the report)."""

    split: Split
    samples: list[Sample]
    boxes: str  # "gt" or the detections file
    data: Path
    missing: MissingFrames
    subset: set[int] | None = None  # image ids scored when --max-samples cut the split short

    def describe(self) -> dict[str, Any]:
        return {
            "data": str(self.data),
            "split": self.split.name,
            "videos": len(self.split.videos),
            "labeled_frames": sum(len(v.labeled_frames) for v in self.split.videos),
            "samples": len(self.samples),
            "boxes": self.boxes,
            "missing_frames": self.missing,
            "scored_frames": None if self.subset is None else len(self.subset),
        }


def load_posetrack(
    data: str | Path,
    split: str = "val",
    boxes: str = "gt",
    det_thr: float = 0.3,
    missing: MissingFrames = "error",
    max_samples: int | None = None,
) -> PoseTrackData:
    """Read the split and list its (key frame, person box) samples; every problem is a ``DataError``."""
    root = Path(data)
    if not root.exists():
        raise DataError(
            f"PoseTrack data {root} does not exist: pass the dataset root (with annotations/{split}/)"
        )
    the_split = load_split(root, split)
    if not the_split.videos:
        raise DataError(f"{root} holds no PoseTrack videos for split {split!r}")
    if boxes == "gt":
        box_source: Any = "gt"
    else:
        box_path = Path(boxes)
        if not box_path.is_file():
            raise DataError(f"--boxes must be 'gt' or a detections JSON file; {box_path} does not exist")
        box_source = load_detections(box_path, score_thr=det_thr)
    samples = list(iter_samples(the_split, box_source))
    subset: set[int] | None = None
    if max_samples is not None:
        if max_samples < 1:
            raise DataError(f"--max-samples must be positive, got {max_samples}")
        if max_samples < len(samples):
            # Whole frames only, and only those frames scored: a frame with half its people
            # predicted (or one never predicted) would count their joints as misses.
            subset = set()
            kept: list[Sample] = []
            for s in samples:
                if len(kept) >= max_samples and s.frame.image_id not in subset:
                    break
                subset.add(s.frame.image_id)
                kept.append(s)
            samples = kept
    if not samples:
        raise DataError(
            f"{root} ({split}) yields no person boxes on labelled frames"
            + ("" if boxes == "gt" else f" from {boxes} at score >= {det_thr}")
        )
    return PoseTrackData(the_split, samples, boxes, root, missing, subset)


def crop_samples(
    samples: Sequence[Sample], config: TDMIConfig, missing: MissingFrames, cache: FrameCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clips [N, T, 3, H, W] plus crop centres and scales [N, 2] for decoding."""
    clips = np.empty((len(samples), config.num_frames, 3, *config.input_size), dtype=np.float32)
    centers = np.empty((len(samples), 2), dtype=np.float32)
    scales = np.empty((len(samples), 2), dtype=np.float32)
    for i, s in enumerate(samples):
        try:
            paths = s.clip_paths(config.num_frames, missing)
        except DataError as e:
            if "missing='nearest'" in str(e):  # say it in the CLI's words
                raise DataError(f"{e} (tdmi-bench: --missing-frames nearest)") from None
            raise
        frames = [cache.get(p) for p in paths]
        clips[i], info = crop_clip(frames, s.bbox_xywh, config.input_size, padding=config.bbox_padding)
        centers[i], scales[i] = info.center, info.scale
    return clips, centers, scales


@dataclass(eq=False)
class BackendAccuracy:
    """One backend's predictions on the split, its score, and why it has none if so."""

    runner: Runner
    keypoints: list[np.ndarray] = field(default_factory=list)  # per chunk [n, J, 2] image pixels
    scores: list[np.ndarray] = field(default_factory=list)  # per chunk [n, J]
    coords: list[np.ndarray] = field(default_factory=list)  # per chunk [n, J, 2] heatmap pixels
    nonfinite: int = 0
    error: str | None = None
    result: EvalResult | None = None
    predictions: Path | None = None
    agreement: float | None = None
    max_dev: float | None = None

    @property
    def usable(self) -> bool:
        return self.error is None and self.nonfinite == 0


def _predict_chunk(
    acc: BackendAccuracy, clips: np.ndarray, n: int, centers: np.ndarray, scales: np.ndarray
) -> None:
    if acc.error is not None:
        return
    try:
        out = acc.runner.run(clips)
    except Exception as e:  # one broken backend must not stop the others; its row says why
        first = (str(e).splitlines() or [""])[0][:200]
        acc.error = first if isinstance(e, DataError) else f"{type(e).__name__}: {first}"
        return
    if out.ndim != 4 or out.shape[0] != clips.shape[0]:
        acc.error = f"output shape {tuple(out.shape)} is not [{clips.shape[0]}, J, h, w]"
        return
    out = out[:n]
    bad = nonfinite_count(out)
    acc.nonfinite += bad
    clean = np.where(np.isfinite(out), out, 0.0).astype(np.float32) if bad else out
    kp, sc = heatmaps_to_keypoints(clean, centers[:n], scales[:n], refine="quarter")
    coords = heatmap_coords(out)
    if bad:
        coords[~np.isfinite(out).all(axis=(2, 3))] = np.nan
    acc.keypoints.append(kp)
    acc.scores.append(sc)
    acc.coords.append(coords)


def _write_backend(acc: BackendAccuracy, data: PoseTrackData, out_dir: Path) -> None:
    """One PoseTrack18 JSON per video (every video, even one without boxes, so poseval sees them all)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keypoints = np.concatenate(acc.keypoints) if acc.keypoints else np.zeros((0, 17, 2), np.float32)
    scores = np.concatenate(acc.scores) if acc.scores else np.zeros((0, 17), np.float32)
    per_video: dict[str, dict[int, list[Person]]] = {}
    for i, s in enumerate(data.samples):
        frame_people = per_video.setdefault(s.video.name, {}).setdefault(s.frame.image_id, [])
        kp = np.concatenate([keypoints[i].astype(np.float64), scores[i, :, None].astype(np.float64)], axis=1)
        frame_people.append(
            Person(
                keypoints=kp,
                keypoint_scores=scores[i].astype(np.float64),
                bbox_xywh=np.asarray(s.bbox_xywh, dtype=np.float64),
                score=float(s.score),
                track_id=len(frame_people),
            )
        )
    for video in data.split.videos:
        write_predictions(out_dir, video.name, video.frames, per_video.get(video.name, {}))
    acc.predictions = out_dir


def evaluate_split(data: PoseTrackData, pred_dir: Path) -> EvalResult:
    """Score a prediction folder: ``tdmi.eval.evaluate`` on the GT files when they are per-video files.

    A merged annotation file (several videos in one JSON) has no per-video GT file to pair with, so
    its frames are paired with the per-video predictions by image id and scored frame by frame; the
    same happens when ``--max-samples`` limits the scored frames.
    """
    videos = data.split.videos
    sources = [v.source for v in videos]
    per_video = all(s is not None and s.stem == v.name for s, v in zip(sources, videos, strict=True))
    if data.subset is None and per_video and len(set(sources)) == len(videos):
        parents = {s.parent for s in sources if s is not None}
        if len(videos) == 1 and sources[0] is not None:
            return evaluate(sources[0], pred_dir)
        if len(parents) == 1:
            parent = parents.pop()
            if len(list(parent.glob("*.json"))) == len(videos):
                return evaluate(parent, pred_dir)
    pairs = []
    for video in videos:
        pred_frames = {
            f.image_id: f for v in load_annotation_file(pred_dir / f"{video.name}.json") for f in v.frames
        }
        for frame in video.frames:
            if data.subset is not None and frame.image_id not in data.subset:
                continue
            pred = pred_frames.get(frame.image_id)
            if pred is None:
                raise DataError(f"{pred_dir / (video.name + '.json')} lacks image {frame.image_id}")
            pairs.append((frame, pred.persons))
    return evaluate_frames(pairs, {"videos": len(videos)})


def run_posetrack(
    runners: Sequence[Runner],
    data: PoseTrackData,
    config: TDMIConfig,
    pred_root: str | Path,
    reference: str,
    batch_size: int = 8,
    advance: Advance | None = None,
) -> list[BackendAccuracy]:
    """Predict every sample with every runner, write and score the predictions, compare to ``reference``.

    The last batch is padded (repeating its last clip) to ``batch_size`` so fixed-batch engines
    take it; padded outputs are dropped. A backend with NaN/Inf output gets no mAP (its keypoints
    would be meaningless), only the flag.
    """
    if batch_size < 1:
        raise DataError(f"the evaluation batch size must be positive, got {batch_size}")
    names = [r.name for r in runners]
    if reference not in names:
        raise DataError(f"the reference backend {reference!r} is not among the runners ({', '.join(names)})")
    step = advance or (lambda _name, _n: None)
    cache = FrameCache()
    accs = [BackendAccuracy(r) for r in runners]
    for start in range(0, len(data.samples), batch_size):
        chunk = data.samples[start : start + batch_size]
        clips, centers, scales = crop_samples(chunk, config, data.missing, cache)
        n = len(chunk)
        if n < batch_size:
            pad = np.repeat(clips[-1:], batch_size - n, axis=0)
            clips = np.concatenate([clips, pad], axis=0)
        for acc in accs:
            _predict_chunk(acc, clips, n, centers, scales)
            step(acc.runner.name, n)
    root = Path(pred_root)
    ref = next(a for a in accs if a.runner.name == reference)
    ref_coords = np.concatenate(ref.coords) if ref.usable and ref.coords else None
    for acc in accs:
        if acc.error is not None:
            continue
        if ref_coords is not None and acc.coords:
            acc.agreement, acc.max_dev = coords_agreement(ref_coords, np.concatenate(acc.coords))
        if acc.nonfinite:
            continue
        _write_backend(acc, data, root / acc.runner.name)
        assert acc.predictions is not None
        acc.result = evaluate_split(data, acc.predictions)
    return accs
