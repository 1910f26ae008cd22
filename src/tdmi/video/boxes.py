"""Person boxes per frame (PoseTrack detections / ground truth, MOT CSV, or the full frame) and
the tracks built from them (given ids, or a greedy IoU tracker)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tdmi.data.boxes import check_boxes
from tdmi.errors import DataError

POSETRACK_ID_MIN = 10**9  # PoseTrack image ids are TSSSSSSFFFF: the frame index is the last 4 digits


@dataclass
class Det:
    box: np.ndarray  # [4] x, y, w, h
    score: float
    track_id: int | None = None
    where: str = ""  # file and line (or record) it came from, for error messages


@dataclass
class BoxTrack:
    """One person over consecutive frames: ``boxes[frame]`` = x, y, w, h; ``fill_box`` covers all frames."""

    track_id: int
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    fill_box: np.ndarray | None = None

    def has(self, frame: int) -> bool:
        return self.fill_box is not None or frame in self.boxes

    def box(self, frame: int) -> np.ndarray:
        if self.fill_box is not None:
            return self.fill_box
        return self.boxes[frame]

    def score(self, frame: int) -> float:
        return 1.0 if self.fill_box is not None else self.scores.get(frame, 1.0)

    @property
    def first(self) -> int:
        return min(self.boxes) if self.boxes else 0

    @property
    def last(self) -> int:
        return max(self.boxes) if self.boxes else -1

    def nearest_box(self, frame: int) -> np.ndarray:
        """Its box at ``frame``, or at the closest end of the track outside it."""
        if self.has(frame):
            return self.box(frame)
        return self.boxes[min(max(frame, self.first), self.last)]


def full_frame_tracks(width: int, height: int) -> list[BoxTrack]:
    """One person filling the whole frame, on every frame."""
    return [BoxTrack(0, fill_box=np.array([0.0, 0.0, float(width), float(height)]))]


def _frame_from_image_id(image_id: int) -> int:
    return image_id % 10000 if image_id >= POSETRACK_ID_MIN else image_id


def _box(values: list[float], where: str) -> np.ndarray:
    """Four numbers; whether a clip can be cut from them is :func:`check_dets`' job (it knows the frame)."""
    box = np.asarray(values, dtype=np.float64)
    if box.shape != (4,):
        raise DataError(f"{where}: a box must be 4 numbers x, y, w, h, got {values}")
    return box


def check_dets(dets: dict[int, list[Det]], width: int, height: int) -> None:
    """Every box checked as serving checks it (:func:`tdmi.data.boxes.check_boxes`), naming its line."""
    flat = [d for ds in dets.values() for d in ds]
    if flat:
        check_boxes(np.stack([d.box for d in flat]), (height, width), where=[d.where for d in flat])


def load_mot_csv(path: Path, score_thr: float = 0.0) -> dict[int, list[Det]]:
    """MOT-style rows ``frame,id,x,y,w,h,score`` (frames from 1 as in MOTChallenge; id -1 = untracked)."""
    out: dict[int, list[Det]] = {}
    with open(path, newline="") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or row[0].strip().startswith("#"):
                continue
            where = f"{path}:{line_no}"
            if line_no == 1 and not row[0].strip().lstrip("-").isdigit():
                continue  # a header line
            if len(row) < 6:
                raise DataError(f"{where}: expected frame,id,x,y,w,h[,score], got {len(row)} fields")
            try:
                frame, tid = int(float(row[0])), int(float(row[1]))
                vals = [float(v) for v in row[2:6]]
                score = float(row[6]) if len(row) > 6 and row[6].strip() else 1.0
            except ValueError:
                raise DataError(f"{where}: non-numeric field in {','.join(row)}") from None
            if frame < 1:
                raise DataError(f"{where}: frame {frame}: MOT frames count from 1")
            if score < score_thr:
                continue
            out.setdefault(frame - 1, []).append(
                Det(_box(vals, where), score, None if tid < 0 else tid, where)
            )
    return out


def _sequence_of(image_id: int) -> int | None:
    return (image_id // 10000) % 10**6 if image_id >= POSETRACK_ID_MIN else None


def load_detections_json(
    path: Path, score_thr: float = 0.3, video_name: str | None = None
) -> dict[int, list[Det]]:
    """PoseTrack/COCO results detections ``[{image_id, bbox, score}]``, untracked.

    A file holding several PoseTrack sequences (ids ``TSSSSSSFFFF``) is narrowed to the sequence
    whose number starts ``video_name`` (``012834_mpii_test``), so frames of other videos never mix in.
    """
    from tdmi.data.posetrack import load_detections

    by_id = load_detections(path, score_thr=score_thr)
    seqs = {_sequence_of(i) for i in by_id}
    if len(seqs) > 1:
        prefix = (video_name or "")[:6]
        want = int(prefix) if prefix.isdigit() else None
        if want is None or want not in seqs:
            raise DataError(
                f"{path} holds detections of {len(seqs)} PoseTrack sequences and the input {video_name!r} "
                "names none of them: name it like the sequence (e.g. 012834_mpii_test) or split the file"
            )
        by_id = {i: d for i, d in by_id.items() if _sequence_of(i) == want}
    out: dict[int, list[Det]] = {}
    for image_id, dets in by_id.items():
        frame = _frame_from_image_id(image_id)
        for n, d in enumerate(dets):
            where = f"{path} image_id {image_id} detection {n}"
            out.setdefault(frame, []).append(Det(_box(list(d.bbox_xywh), where), d.score, None, where))
    return out


def load_gt(path: Path) -> dict[int, list[Det]]:
    """PoseTrack ground-truth boxes with their track ids (one video per file)."""
    from tdmi.data.annotations import load_annotation_file
    from tdmi.data.posetrack import boxes_from_gt

    videos = load_annotation_file(path)
    if len(videos) != 1:
        names = ", ".join(v.name for v in videos)
        raise DataError(f"{path} holds {len(videos)} videos ({names}): give the per-video annotation file")
    out: dict[int, list[Det]] = {}
    for frame in videos[0].frames:
        for box, score, person in boxes_from_gt(frame, require_keypoints=False):
            if person.track_id is None:
                raise DataError(f"{path}: frame {frame.frame_index} has a person without track_id")
            where = f"{path} image {frame.image_id} track_id {person.track_id}"
            out.setdefault(frame.frame_index, []).append(Det(box, score, int(person.track_id), where))
    if not out:
        raise DataError(f"{path}: no person boxes in the ground truth")
    return out


def _boxes_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read boxes file {path}: {e}") from None


def gt_file(spec: str | Path, annotations: str | Path | None = None) -> Path | None:
    """The PoseTrack annotation file the boxes come from (``gt``, or a .json of ground truth), else None."""
    if str(spec) == "gt":
        if annotations is None:
            raise DataError("--boxes gt needs the video's PoseTrack annotation file: --annotations FILE.json")
        return Path(annotations)
    p = Path(spec)
    if p.suffix.lower() == ".json" and p.is_file():
        data = _boxes_json(p)
        if isinstance(data, dict) and "annotations" in data:
            return p
    return None


def load_boxes(
    spec: str | Path,
    annotations: str | Path | None = None,
    score_thr: float = 0.3,
    video_name: str | None = None,
) -> dict[int, list[Det]]:
    """Boxes per 0-based frame from ``gt`` (with ``annotations``), a .csv (MOT) or a .json file."""
    gt = gt_file(spec, annotations)
    if gt is not None:
        return load_gt(gt)
    p = Path(spec)
    if not p.is_file():
        raise DataError(f"boxes file {p} not found: give a detections .json, a MOT .csv, or 'gt'")
    if p.suffix.lower() == ".csv":
        return load_mot_csv(p, 0.0)
    if p.suffix.lower() != ".json":
        raise DataError(
            f"boxes file {p}: expected .json (PoseTrack detections or ground truth) or .csv (MOT)"
        )
    return load_detections_json(p, score_thr, video_name)


def annotation_images(
    spec: str | Path, annotations: str | Path | None = None
) -> dict[int, dict[str, Any]] | None:
    """Frame index -> the annotation's ``images`` entry, when the boxes are PoseTrack ground truth.

    Predictions written with these entries (ids, file names) are what ``tdmi-eval`` pairs with that
    ground truth; None for other boxes.
    """
    path = gt_file(spec, annotations)
    if path is None:
        return None
    from tdmi.data.annotations import load_annotation_file
    from tdmi.eval.io import frame_image_entry

    videos = load_annotation_file(path)
    if len(videos) != 1:
        raise DataError(f"{path} holds {len(videos)} videos: give the per-video annotation file")
    out: dict[int, dict[str, Any]] = {}
    for frame in videos[0].frames:
        if frame.frame_index in out:
            raise DataError(f"{path}: two images for frame {frame.frame_index} ({frame.file_name})")
        out[frame.frame_index] = frame_image_entry(frame, videos[0])
    return out


def check_annotation_frames(images: dict[int, dict[str, Any]], num_frames: int) -> None:
    """The annotation's images must be frames of the input (else it annotates another video)."""
    beyond = sorted(f for f in images if f >= num_frames or f < 0)
    if beyond:
        names = ", ".join(str(images[f].get("file_name")) for f in beyond[:3])
        raise DataError(
            f"the annotation lists frame(s) {beyond[:5]} ({names}) but the input has frames "
            f"0..{num_frames - 1}: is the annotation for another video?"
        )


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xywh boxes a [N, 4] and b [M, 4]."""
    ax1, ay1, ax2, ay2 = a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2) - np.maximum(ax1[:, None], bx1), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2) - np.maximum(ay1[:, None], by1), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + b[:, 2] * b[:, 3] - inter
    return inter / np.maximum(union, 1e-9)


class IouTracker:
    """Greedy highest-IoU frame-to-frame linking, fed one frame at a time (files and live streams).

    ``tracks`` grows as frames come; a track ends when a frame leaves it unmatched.
    """

    def __init__(self, threshold: float = 0.3) -> None:
        self.threshold = threshold
        self.tracks: list[BoxTrack] = []
        self._active: list[BoxTrack] = []

    def update(self, frame: int, boxes: list[Det]) -> None:
        live = [t for t in self._active if t.last == frame - 1]
        matched: dict[int, BoxTrack] = {}
        if live and boxes:
            m = iou(np.stack([t.boxes[frame - 1] for t in live]), np.stack([d.box for d in boxes]))
            while True:
                i, j = (int(v) for v in np.unravel_index(int(np.argmax(m)), m.shape))
                if m[i, j] < self.threshold:
                    break
                matched[int(j)] = live[int(i)]
                m[i, :] = -1.0
                m[:, j] = -1.0
        self._active = []
        for j, d in enumerate(boxes):
            t = matched.get(j)
            if t is None:
                t = BoxTrack(len(self.tracks))
                self.tracks.append(t)
            t.boxes[frame] = d.box
            t.scores[frame] = d.score
            self._active.append(t)


def iou_track(dets: dict[int, list[Det]], threshold: float = 0.3) -> list[BoxTrack]:
    """Link untracked boxes frame to frame: greedy highest-IoU matching, a track ends when unmatched."""
    tracker = IouTracker(threshold)
    for frame in sorted(dets):
        tracker.update(frame, dets[frame])
    return tracker.tracks


def make_tracks(
    dets: dict[int, list[Det]], tracker: bool = True, iou_threshold: float = 0.3
) -> list[BoxTrack]:
    """Tracks from boxes: their own ids if given (no gaps allowed), else the IoU tracker (or one per box)."""
    flat = [(f, d) for f, ds in dets.items() for d in ds]
    if not flat:
        raise DataError("no person boxes at all (check the score threshold or the file)")
    with_id = [d.track_id is not None for _, d in flat]
    if any(with_id) and not all(with_id):
        raise DataError("some boxes have track ids and some do not: give ids for all (or -1 for all)")
    if not all(with_id):
        if tracker:
            return iou_track(dets, iou_threshold)
        out: list[BoxTrack] = []
        for f, d in sorted(flat, key=lambda x: x[0]):
            out.append(BoxTrack(len(out), {f: d.box}, {f: d.score}))
        return out
    by_id: dict[int, BoxTrack] = {}
    for f, d in flat:
        tid = int(d.track_id or 0)  # every box has an id here (checked above)
        t = by_id.setdefault(tid, BoxTrack(tid))
        if f in t.boxes:
            raise DataError(f"track {t.track_id} has two boxes on frame {f}")
        t.boxes[f] = d.box
        t.scores[f] = d.score
    for t in by_id.values():
        missing = sorted(set(range(t.first, t.last + 1)) - set(t.boxes))
        if missing:
            raise DataError(
                f"track {t.track_id} has a gap: no box on frame(s) {missing[:5]} between frames {t.first} "
                f"and {t.last}; fill the gap or give the two parts different ids"
            )
    return [by_id[k] for k in sorted(by_id)]


def check_frames_exist(tracks: list[BoxTrack], num_frames: int) -> None:
    """Boxes must refer to frames the input has."""
    for t in tracks:
        if t.boxes and (t.first < 0 or t.last >= num_frames):
            bad = t.last if t.last >= num_frames else t.first
            raise DataError(
                f"track {t.track_id} has a box on frame {bad} but the input has frames 0..{num_frames - 1} "
                "(MOT CSV frames count from 1): are the boxes for another video?"
            )
