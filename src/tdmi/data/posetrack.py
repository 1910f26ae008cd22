"""PoseTrack splits, person boxes (ground truth or detections), samples and clip frame paths.

A split is the annotation files of one folder (:mod:`tdmi.data.annotations` reads each file); a
sample is one person box on one labelled key frame, with the paths of the clip around it.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tdmi.data.annotations import (
    Detection,
    Frame,
    Person,
    Split,
    Video,
    frame_number,
    json_number,
    load_annotation_file,
    load_json,
    optional_int,
)
from tdmi.errors import DataError
from tdmi.spec.choices import MissingFrames


@dataclass
class Sample:
    """One person box on one labelled key frame: the unit the top-down model runs on."""

    video: Video
    frame: Frame
    bbox_xywh: np.ndarray
    score: float
    person: Person | None  # the ground-truth person for GT boxes, None for detections
    image_root: Path

    @property
    def image_path(self) -> Path:
        return self.image_root / self.frame.file_name

    def clip_paths(self, num_frames: int, missing: MissingFrames = "error") -> list[Path]:
        return clip_frame_paths(self.video, self.frame.frame_index, num_frames, self.image_root, missing)


def _annotation_files(path: Path, split: str) -> tuple[list[Path], Path | None]:
    """The JSON files to read, and the dataset root when ``path`` is one (``root/annotations/split``)."""
    if path.is_file():
        return [path], None
    if not path.is_dir():
        raise DataError(
            f"{path} does not exist: pass a PoseTrack root, a folder of per-video JSONs or a JSON file"
        )
    layout = path / "annotations" / split
    if layout.is_dir():
        files = sorted(layout.glob("*.json"))
        if not files:
            raise DataError(f"{layout} holds no .json annotation files")
        return files, path
    files = sorted(path.glob("*.json"))
    if not files:
        raise DataError(
            f"{path} holds no .json files and no annotations/{split}/ folder: "
            "pass a PoseTrack root, a folder of per-video JSONs or a JSON file"
        )
    return files, None


def _guess_image_root(start: Path, videos: list[Video]) -> Path:
    """The nearest folder (``start`` or above) in which the first frame's ``file_name`` exists."""
    probe = next((f.file_name for v in videos for f in v.frames), None)
    base = start if start.is_dir() else start.parent
    if probe is not None:
        for cand in (base, *base.parents):
            if (cand / probe).exists():
                return cand
    # Nothing on disk yet (annotations without frames): the root of the usual layout.
    if base.parent.name == "annotations":
        return base.parent.parent
    if base.name == "annotations":
        return base.parent
    return base


def load_split(
    root: str | Path, split: str = "val", image_root: str | Path | None = None, progress: bool = False
) -> Split:
    """Read ``root/annotations/{split}/*.json``, a folder of per-video JSONs, or one (merged) JSON file.

    ``image_root`` is the folder that the files' ``file_name`` paths are relative to; by default the
    dataset root, or for a bare folder/file the nearest parent in which the frames exist.
    """
    path = Path(root)
    files, dataset_root = _annotation_files(path, split)
    videos: list[Video] = []
    if progress and len(files) > 20:
        from rich.progress import track

        iterable = track(files, description=f"reading {split} annotations")
    else:
        iterable = files
    for f in iterable:
        videos.extend(load_annotation_file(f))
    if image_root is not None:
        img_root = Path(image_root)
    elif dataset_root is not None:
        img_root = dataset_root
    else:
        img_root = _guess_image_root(path, videos)
    return Split(videos=videos, image_root=img_root, name=split)


# ----------------------------------------------------------------------------- boxes


def load_detections(
    path: str | Path, score_thr: float = 0.3, category_id: int | None = 1
) -> dict[int, list[Detection]]:
    """Person boxes per image id from a COCO results JSON, keeping those with ``score >= score_thr``.

    Boxes of one image are sorted by decreasing score.
    """
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {{image_id, bbox, score, category_id}} detections")
    out: dict[int, list[Detection]] = {}
    for i, d in enumerate(data):
        where = f"{path} [{i}]"
        if not isinstance(d, dict) or not {"image_id", "bbox", "score"} <= d.keys():
            raise DataError(f"{where}: each detection needs image_id, bbox and score")
        bbox = d["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(f"{where}: bbox must be [x, y, w, h]")
        score = json_number(d["score"], "score", where)
        cat = optional_int(d.get("category_id", 1))
        if category_id is not None and cat != category_id:
            continue
        if not score >= score_thr:
            continue
        box = tuple(json_number(v, "bbox", where) for v in bbox)
        det = Detection(image_id=int(d["image_id"]), bbox_xywh=box, score=score, category_id=cat or 1)  # type: ignore[arg-type]  # bbox has 4 numbers: checked above, tuple() loses the length
        out.setdefault(det.image_id, []).append(det)
    for dets in out.values():
        dets.sort(key=lambda x: -x.score)
    return out


def boxes_from_gt(frame: Frame, require_keypoints: bool = True) -> list[tuple[np.ndarray, float, Person]]:
    """GT person boxes of a frame as ``(bbox_xywh, score=1, person)``; skips people without a usable box.

    With ``require_keypoints`` people without any labelled joint are skipped (they cannot be scored).
    """
    out = []
    for p in frame.persons:
        if p.bbox_xywh is None or not (p.bbox_xywh[2] > 0 and p.bbox_xywh[3] > 0):
            continue
        if require_keypoints and p.num_labeled == 0:
            continue
        out.append((p.bbox_xywh.copy(), 1.0, p))
    return out


def iter_samples(
    split: Split,
    boxes: Literal["gt"] | Mapping[int, Sequence[Detection]] = "gt",
    labeled_only: bool = True,
) -> Iterator[Sample]:
    """Every (key frame, person box) pair: GT boxes, or detections keyed by image id (``load_detections``)."""
    if isinstance(boxes, str) and boxes != "gt":
        raise DataError(f"boxes must be 'gt' or detections from load_detections, got {boxes!r}")
    for video in split.videos:
        for frame in video.frames:
            if labeled_only and not frame.is_labeled:
                continue
            if isinstance(boxes, str):
                for bbox, score, person in boxes_from_gt(frame):
                    yield Sample(video, frame, bbox, score, person, split.image_root)
            else:
                for det in boxes.get(frame.image_id, ()):
                    yield Sample(
                        video,
                        frame,
                        np.asarray(det.bbox_xywh, dtype=np.float64),
                        det.score,
                        None,
                        split.image_root,
                    )


# ----------------------------------------------------------------------------- clips


def _numbered_path(image_root: Path, key_file: str, number: int) -> Path:
    p = Path(key_file)
    m = re.search(r"(\d+)(?=\.[A-Za-z]+$)", p.name)
    if not m:
        raise DataError(f"cannot derive neighbouring frame names from {key_file}: no frame number in it")
    width = len(m.group(1))
    name = p.name[: m.start(1)] + f"{number:0{width}d}" + p.name[m.end(1) :]
    return image_root / p.parent / name


def clip_frame_paths(
    video: Video,
    key_frame_index: int,
    num_frames: int,
    image_root: str | Path,
    missing: MissingFrames = "error",
) -> list[Path]:
    """Paths of ``num_frames`` frames centred on the key frame, indices clamped to the video.

    Neighbour file names follow the key frame's numbering (same folder, digits and extension).
    ``missing="nearest"`` replaces a neighbour absent on disk by the nearest existing frame of
    the video (for partial downloads); the key frame itself must always exist.
    """
    if num_frames < 1 or num_frames % 2 == 0:
        raise DataError(f"num_frames must be odd and positive (2*delta+1), got {num_frames}")
    if missing not in ("error", "nearest"):
        raise DataError(f"missing must be 'error' or 'nearest', got {missing!r}")
    root = Path(image_root)
    key = video.frame_by_index(key_frame_index)
    key_number = frame_number(key.file_name)
    if key_number is None:
        raise DataError(f"cannot derive neighbouring frame names from {key.file_name}: no frame number in it")
    offset = key_number - key_frame_index  # file number minus frame index (1 for 1-based 2017 names)
    last = max(video.num_frames() - 1, key_frame_index)
    delta = num_frames // 2
    key_path = _numbered_path(root, key.file_name, key_number)
    if not key_path.is_file():
        raise DataError(
            f"key frame {key_path} is missing: check the image root {root} or download the frames"
        )
    out: list[Path] = []
    for d in range(-delta, delta + 1):
        idx = min(max(key_frame_index + d, 0), last)
        p = _numbered_path(root, key.file_name, idx + offset)
        if not p.is_file():
            if missing == "error":
                raise DataError(
                    f"frame {p} of video {video.name} is missing (needed for the clip around frame "
                    f"{key_frame_index}): download the full video or use missing='nearest'"
                )
            p = _nearest_existing(root, key.file_name, idx, key_frame_index, offset, last)
        out.append(p)
    return out


def _nearest_existing(root: Path, key_file: str, idx: int, key_idx: int, offset: int, last: int) -> Path:
    """The existing frame closest to ``idx``; ties go to the side of the key frame."""
    toward = 1 if key_idx >= idx else -1
    for dist in range(1, last + 1):
        for cand in (idx + toward * dist, idx - toward * dist):
            if 0 <= cand <= last:
                p = _numbered_path(root, key_file, cand + offset)
                if p.is_file():
                    return p
    return _numbered_path(root, key_file, key_idx + offset)


class FrameCache:
    """Decoded frames, least recently used dropped: neighbouring key frames share most of their clip."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._frames: collections.OrderedDict[Path, np.ndarray] = collections.OrderedDict()

    def get(self, path: Path) -> np.ndarray:
        if path in self._frames:
            self._frames.move_to_end(path)
            return self._frames[path]
        import cv2  # here, not at import: the PoseTrack readers above need no OpenCV

        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"cannot read image {path}: the file is missing or not an image")
        self._frames[path] = img
        if len(self._frames) > self.size:
            self._frames.popitem(last=False)
        return img
