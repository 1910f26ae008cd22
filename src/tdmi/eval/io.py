"""PoseTrack18-format prediction files and folder-level evaluation (GT folder vs prediction folder)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tdmi.data.annotations import Frame, Person, Video, load_annotation_file
from tdmi.errors import DataError
from tdmi.eval.poseval import EvalResult, evaluate_frames
from tdmi.spec.joints import NUM_JOINTS, POSETRACK_JOINTS
from tdmi.utils import write_text_atomic

MissingPredictions = Literal["error", "empty"]

SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
    [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]  # fmt: skip
CATEGORY = {
    "supercategory": "person",
    "id": 1,
    "name": "person",
    "keypoints": list(POSETRACK_JOINTS),
    "skeleton": SKELETON,
}


def frame_image_entry(frame: Frame, video: Video | None = None) -> dict[str, Any]:
    """The PoseTrack18 ``images`` entry of a frame: the original one when it came from such a file."""
    if "file_name" in frame.raw and "id" in frame.raw:
        return dict(frame.raw)
    entry: dict[str, Any] = {
        "id": frame.image_id,
        "frame_id": frame.image_id,
        "file_name": frame.file_name,
        "is_labeled": frame.is_labeled,
    }
    if video is not None:
        entry["vid_id"] = video.name.split("_")[0]
        entry["nframes"] = video.num_frames()
    if frame.width is not None and frame.height is not None:
        entry["width"], entry["height"] = frame.width, frame.height
    if frame.ignore_regions:
        entry["ignore_regions_x"] = [r[:, 0].tolist() for r in frame.ignore_regions]
        entry["ignore_regions_y"] = [r[:, 1].tolist() for r in frame.ignore_regions]
    return entry


def _annotation(person: Person, image_id: int, index: int, track_id: int) -> dict[str, Any]:
    kp = np.asarray(person.keypoints, dtype=np.float64)
    if kp.shape != (NUM_JOINTS, 3):
        raise DataError(f"prediction keypoints must have shape [{NUM_JOINTS}, 3], got {list(kp.shape)}")
    if not np.isfinite(kp).all():
        raise DataError(f"prediction for image {image_id} has non-finite keypoints (NaN/inf)")
    scores = kp[:, 2] if person.keypoint_scores is None else np.asarray(person.keypoint_scores, np.float64)
    if scores.shape != (NUM_JOINTS,) or not np.isfinite(scores).all():
        raise DataError(f"prediction for image {image_id} needs {NUM_JOINTS} finite keypoint scores")
    ann: dict[str, Any] = {
        "id": image_id * 100 + index,
        "image_id": image_id,
        "track_id": track_id,
        "category_id": 1,
        "keypoints": [float(v) for v in kp.reshape(-1)],
        "scores": [float(v) for v in scores],
    }
    if person.bbox_xywh is not None:
        ann["bbox"] = [float(v) for v in person.bbox_xywh]
    if person.score is not None:
        ann["score"] = float(person.score)
    return ann


def write_predictions(
    out_dir: str | Path,
    video_name: str,
    images: Sequence[Mapping[str, Any] | Frame],
    persons: Mapping[int, Sequence[Person]],
) -> Path:
    """Write ``out_dir/{video_name}.json`` in PoseTrack18 form (atomically) and return its path.

    ``images`` are copied as given (the GT entries, so poseval pairs frames correctly);
    ``persons`` maps image id -> predicted people, ``keypoints[:, 2]`` / ``keypoint_scores``
    being per-joint confidences. People without a track id get their index in the frame; ids
    must be unique within a frame, as poseval requires.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise DataError(f"prediction folder {out} does not exist: create it first")
    image_entries = [frame_image_entry(im) if isinstance(im, Frame) else dict(im) for im in images]
    known = {int(im["id"]) for im in image_entries if "id" in im}
    unknown = sorted(set(persons) - known)
    if unknown:
        raise DataError(
            f"predictions for image ids {unknown[:5]} that are not among the images of {video_name}"
        )
    annotations = []
    for im in image_entries:
        image_id = int(im["id"])
        seen: set[int] = set()
        for i, p in enumerate(persons.get(image_id, ())):
            tid = i if p.track_id is None else int(p.track_id)
            if tid in seen:
                raise DataError(f"track id {tid} is used twice in image {image_id}: poseval rejects that")
            seen.add(tid)
            annotations.append(_annotation(p, image_id, i, tid))
    doc = {"images": image_entries, "annotations": annotations, "categories": [CATEGORY]}
    path = out / f"{video_name}.json"
    write_text_atomic(path, json.dumps(doc))
    return path


def _frames_of(path: Path, prediction: bool = False) -> list[Frame]:
    return [f for v in load_annotation_file(path, require_annotations=prediction) for f in v.frames]


def _frame_key(frame: Frame, key: str) -> Any:
    if (
        key == "video/frame"
    ):  # 'seq/000001.jpg' of a tdmi-infer frame folder run vs 'images/val/seq/000001.jpg'
        return "/".join(Path(str(frame.file_name)).parts[-2:]) if frame.file_name else None
    return getattr(frame, key)


def _pair_frames(gt: list[Frame], pr: list[Frame], pred_path: Path) -> list[tuple[Frame, list[Person]]]:
    """Pair GT frames with prediction frames by file name, image id, or the file name's last two parts
    (sequence folder / frame file: what ``tdmi-infer`` writes for a frame folder); equal counts, as poseval.
    """
    if len(pr) != len(gt):
        raise DataError(
            f"{pred_path} has {len(pr)} images but the ground truth has {len(gt)}: "
            "copy the GT 'images' list into the prediction file"
        )
    for key in ("file_name", "image_id", "video/frame"):
        by_key = {_frame_key(f, key): f for f in pr}
        if len(by_key) == len(pr) and None not in by_key and all(_frame_key(g, key) in by_key for g in gt):
            return [(g, by_key[_frame_key(g, key)].persons) for g in gt]
    raise DataError(f"the images of {pred_path} do not match the ground truth (neither file names nor ids)")


def prediction_file(pred_root: Path, gt_path: Path) -> Path:
    """``PRED/<name>.json``, or ``PRED/<name>/<name>.json`` as a many-video ``tdmi-infer`` run writes it."""
    flat = pred_root / gt_path.name
    nested = pred_root / gt_path.stem / gt_path.name
    return nested if not flat.is_file() and nested.is_file() else flat


def _json_files(path: Path, what: str) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{what} {path} does not exist")
    files = sorted(path.glob("*.json"))
    if not files:
        hint = next((f" (did you mean {c}?)" for c in [path / "annotations" / "val"] if c.is_dir()), "")
        raise DataError(f"{what} {path} holds no .json files{hint}")
    return files


def evaluate(
    gt_dir: str | Path,
    pred_dir: str | Path,
    missing: MissingPredictions = "error",
    progress: bool = False,
) -> EvalResult:
    """poseval AP of a folder of per-video predictions against a folder of per-video GT files.

    Prediction files carry the GT file names, flat or one folder per video (``tdmi-infer`` over many
    videos: ``PRED/<name>/<name>.json``). A missing one is an error, or with
    ``missing="empty"`` counts as a video without predictions.
    """
    if missing not in ("error", "empty"):
        raise DataError(f"missing must be 'error' or 'empty', got {missing!r}")
    gt_files = _json_files(Path(gt_dir), "ground-truth folder")
    pred_root = Path(pred_dir)
    if not pred_root.is_dir():
        raise DataError(f"prediction folder {pred_root} does not exist")
    pairs: list[tuple[Frame, list[Person]]] = []
    missing_files: list[str] = []
    iterable: Any = gt_files
    if progress and len(gt_files) > 10:
        from rich.progress import track

        iterable = track(gt_files, description="reading predictions")
    for gt_path in iterable:
        gt_frames = _frames_of(gt_path)
        pred_path = prediction_file(pred_root, gt_path)
        if not pred_path.is_file():
            if missing == "error":
                raise DataError(
                    f"no prediction file {pred_path} for ground-truth video {gt_path.stem}: "
                    "write one per GT file (same name) or pass --missing empty"
                )
            missing_files.append(gt_path.name)
            pairs.extend((g, []) for g in gt_frames)
            continue
        pairs.extend(_pair_frames(gt_frames, _frames_of(pred_path, prediction=True), pred_path))
    return evaluate_frames(pairs, {"videos": len(gt_files), "missing_prediction_files": missing_files})
