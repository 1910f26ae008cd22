"""PoseTrack 2017 / 2018 / 2021 annotation files, read into one in-memory form.

Everything is converted to the 17-joint PoseTrack order (``tdmi.spec.joints.POSETRACK_JOINTS``).
Which keypoints count as *labelled* follows the official poseval conversion exactly, because the
evaluator depends on it: in the COCO-style files a keypoint written ``0, 0, 0`` is unlabelled and
every other one is labelled (whatever its visibility flag); in the 2017 ``annolist`` files every
listed point is labelled. Splits, person boxes, samples and clip frame paths built on these are in
:mod:`tdmi.data.posetrack`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tdmi.errors import DataError
from tdmi.spec.joints import NUM_JOINTS, POSETRACK_JOINTS

FORMAT_2017 = "posetrack17"
FORMAT_2018 = "posetrack18"
FORMAT_2021 = "posetrack21"

# poseval's 15 joint ids (2017 ``annolist`` files use them as ``point[].id``), by name.
POSEVAL_JOINTS: tuple[str, ...] = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "head_bottom",
    "nose",
    "head_top",
)
# POSEVAL_TO_POSETRACK[i] = index in POSETRACK_JOINTS of poseval joint id i.
POSEVAL_TO_POSETRACK: tuple[int, ...] = tuple(POSETRACK_JOINTS.index(n) for n in POSEVAL_JOINTS)

_NAME_ALIASES = {"neck": "head_bottom"}


@dataclass
class Person:
    """One annotated or predicted person, keypoints in PoseTrack order.

    ``keypoints[:, 2]`` is the file's third value: the visibility flag for ground truth, the
    confidence for predictions. ``labeled`` says which joints exist in poseval's sense.
    ``keypoint_scores`` holds per-joint prediction scores (NaN where a file gives none).
    """

    keypoints: np.ndarray  # [17, 3] float64
    bbox_xywh: np.ndarray | None = None  # [4] float64
    head_box_xywh: np.ndarray | None = None  # [4] float64
    track_id: int | None = None
    score: float | None = None
    labeled: np.ndarray = field(default_factory=lambda: np.zeros(NUM_JOINTS, dtype=bool))
    keypoint_scores: np.ndarray | None = None  # [17] float64
    person_id: int | None = None
    annotation_id: int | None = None
    # False only for a 2017 ``annorect`` without ``annopoints[0].point``: poseval drops such rects.
    has_points_entry: bool = True

    @property
    def num_labeled(self) -> int:
        return int(self.labeled.sum())


@dataclass
class Frame:
    """One image of a video; ``raw`` keeps the file's image entry so predictions can copy it."""

    image_id: int
    file_name: str
    frame_index: int
    is_labeled: bool
    width: int | None
    height: int | None
    persons: list[Person]
    ignore_regions: list[np.ndarray]  # each [N, 2] polygon vertices (x, y)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Video:
    """A PoseTrack sequence. ``name`` is the annotation file stem (also the image folder name)."""

    name: str
    frames: list[Frame]
    nframes: int | None = None
    source: Path | None = None
    format: str = FORMAT_2018
    keypoint_names: tuple[str, ...] = POSETRACK_JOINTS

    @property
    def labeled_frames(self) -> list[Frame]:
        return [f for f in self.frames if f.is_labeled]

    def num_frames(self) -> int:
        """Video length for clamping clips: ``nframes`` if the file gives it, else the last index + 1."""
        if self.nframes:
            return int(self.nframes)
        return max((f.frame_index for f in self.frames), default=-1) + 1

    def frame_by_index(self, frame_index: int) -> Frame:
        for f in self.frames:
            if f.frame_index == frame_index:
                return f
        raise DataError(f"video {self.name} has no frame with index {frame_index}")


@dataclass
class Split:
    """The videos of one split plus the folder that their ``file_name`` paths are relative to."""

    videos: list[Video]
    image_root: Path
    name: str = "val"

    def __iter__(self) -> Iterator[Video]:
        return iter(self.videos)

    def __len__(self) -> int:
        return len(self.videos)

    def video(self, name: str) -> Video:
        for v in self.videos:
            if v.name == name:
                return v
        raise DataError(f"split {self.name} has no video named {name}")


@dataclass(frozen=True)
class Detection:
    """A person box from a detector, COCO results form (``bbox`` is x, y, w, h)."""

    image_id: int
    bbox_xywh: tuple[float, float, float, float]
    score: float
    category_id: int = 1


# ----------------------------------------------------------------------------- reading


def load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except json.JSONDecodeError as e:
        msg = f"{path} is not valid JSON ({e.msg} at line {e.lineno}): re-download or re-create it"
        raise DataError(msg) from None
    except (UnicodeDecodeError, IsADirectoryError, PermissionError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def _one(value: Any) -> Any:
    """2017 files wrap scalars in one-element lists (``"x": [12.0]``); accept both forms."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def json_number(value: Any, what: str, where: str) -> float:
    v = _one(value)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DataError(f"{where}: {what} must be a number, got {v!r}")
    return float(v)


def _int_id(value: Any, what: str, where: str) -> int:
    """Image ids are JSON integers, as poseval and the toolkit's writer use them."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise DataError(f"{where}: '{what}' must be an integer, got {json.dumps(value)}")
    return value


def _finite(arr: np.ndarray, what: str, where: str) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise DataError(f"{where}: '{what}' holds NaN or Infinity: every value must be a finite number")
    return arr


def detect_format(data: Any) -> str:
    """``posetrack17`` (annolist), ``posetrack21`` (COCO-style with ``person_id``) or ``posetrack18``."""
    if isinstance(data, dict) and "annolist" in data:
        return FORMAT_2017
    if isinstance(data, dict) and "images" in data:
        anns = data.get("annotations") or []
        if any(isinstance(a, dict) and "person_id" in a for a in anns):
            return FORMAT_2021
        return FORMAT_2018
    raise DataError(
        "not a PoseTrack annotation file: expected an 'annolist' (2017) or 'images' (2018/2021) key"
    )


def _keypoint_names(data: dict[str, Any], where: str) -> tuple[str, ...]:
    cats = data.get("categories")
    if not cats:
        return POSETRACK_JOINTS
    names = cats[0].get("keypoints") if isinstance(cats[0], dict) else None
    if not names:
        return POSETRACK_JOINTS
    names = tuple(_NAME_ALIASES.get(str(n), str(n)) for n in names)
    missing = [n for n in POSEVAL_JOINTS if n not in names]
    if missing:
        raise DataError(f"{where}: categories[0].keypoints lacks {', '.join(missing)}; not a PoseTrack file")
    return names


def _polygons_from_xy(xs: Any, ys: Any, where: str) -> list[np.ndarray]:
    if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
        raise DataError(f"{where}: ignore_regions_x and ignore_regions_y must be lists of equal length")
    polys = []
    for px, py in zip(xs, ys, strict=True):
        if not isinstance(px, list) or not isinstance(py, list) or len(px) != len(py):
            raise DataError(f"{where}: each ignore region needs as many x as y coordinates")
        polys.append(np.asarray([px, py], dtype=np.float64).T.reshape(-1, 2))
    return polys


def frame_number(file_name: str) -> int | None:
    m = re.search(r"(\d+)(?=\.[A-Za-z]+$)", Path(file_name).name)
    return int(m.group(1)) if m else None


def _person_from_coco(
    ann: dict[str, Any], names: tuple[str, ...], where: str, box_only_ok: bool = True
) -> Person:
    kps = ann.get("keypoints")
    k = len(names)
    if kps is None and not box_only_ok:
        raise DataError(
            f"{where}: a person without 'keypoints' (PoseTrack18 lists {3 * k} numbers, zeros for "
            "unlabelled joints); it would silently not count"
        )
    if kps is None:  # PoseTrack21 box-only people: no joint labelled
        kps = [0] * (3 * k)
    if not isinstance(kps, list) or len(kps) != 3 * k:
        raise DataError(f"{where}: 'keypoints' must hold {3 * k} numbers (x, y, v per joint)")
    try:
        arr = np.asarray(kps, dtype=np.float64).reshape(k, 3)
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'keypoints' must be numbers") from None
    _finite(arr, "keypoints", where)
    keypoints = np.zeros((NUM_JOINTS, 3), dtype=np.float64)
    labeled = np.zeros(NUM_JOINTS, dtype=bool)
    raw_scores = ann.get("scores")
    scores: np.ndarray | None = None
    if raw_scores:  # poseval: an empty list means "no scores"
        if not isinstance(raw_scores, list) or len(raw_scores) != k:
            raise DataError(f"{where}: 'scores' must hold one number per keypoint ({k})")
        try:
            raw_arr = np.asarray(raw_scores, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{where}: 'scores' must be numbers") from None
        _finite(raw_arr, "scores", where)
        scores = np.full(NUM_JOINTS, np.nan)
    for src, name in enumerate(names):
        if name not in POSETRACK_JOINTS:
            continue
        dst = POSETRACK_JOINTS.index(name)
        keypoints[dst] = arr[src]
        x, y, v = arr[src]
        labeled[dst] = not (x == 0 and y == 0 and v == 0)
        if scores is not None:
            scores[dst] = raw_arr[src]
    return Person(
        keypoints=keypoints,
        bbox_xywh=_box(ann.get("bbox"), "bbox", where),
        head_box_xywh=_box(ann.get("bbox_head"), "bbox_head", where),
        track_id=optional_int(ann.get("track_id")),
        score=None
        if ann.get("score") is None
        else float(_finite(np.array(json_number(ann.get("score"), "score", where)), "score", where)),
        labeled=labeled,
        keypoint_scores=scores,
        person_id=optional_int(ann.get("person_id")),
        annotation_id=optional_int(ann.get("id")),
    )


def optional_int(value: Any) -> int | None:
    v = _one(value)
    if v is None or isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _box(value: Any, what: str, where: str) -> np.ndarray | None:
    if value is None or (isinstance(value, list) and not value):
        return None
    if not isinstance(value, list) or len(value) != 4:
        raise DataError(f"{where}: '{what}' must be [x, y, w, h]")
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: '{what}' must be four numbers") from None


def _videos_from_coco(
    data: dict[str, Any], path: Path, fmt: str, single_video: bool, require_annotations: bool = False
) -> list[Video]:
    names = _keypoint_names(data, str(path))
    images = data.get("images")
    if require_annotations and "annotations" not in data:
        raise DataError(
            f"{path}: no 'annotations' list: a PoseTrack18 file needs one (an empty list when nobody "
            "is in the images)"
        )
    anns = data.get("annotations", [])
    if not isinstance(images, list) or not isinstance(anns, list):
        raise DataError(f"{path}: 'images' and 'annotations' must be lists")
    by_image: dict[int, list[Person]] = {}
    for i, ann in enumerate(anns):
        where = f"{path} annotations[{i}]"
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise DataError(f"{where}: every annotation needs an 'image_id'")
        image_id = _int_id(ann["image_id"], "image_id", where)
        person = _person_from_coco(ann, names, where, box_only_ok=fmt != FORMAT_2018)
        by_image.setdefault(image_id, []).append(person)
    videos: dict[str, Video] = {}
    for i, im in enumerate(images):
        where = f"{path} images[{i}]"
        if not isinstance(im, dict) or "file_name" not in im or "id" not in im:
            raise DataError(f"{where}: every image needs 'id' and 'file_name'")
        im = {**im, "id": _int_id(im["id"], "id", where)}
        file_name = str(im["file_name"])
        folder = Path(file_name).parent.name
        key = path.stem if single_video else (folder or str(im.get("vid_id", path.stem)))
        idx = frame_number(file_name)
        if idx is None:
            idx = int(im["id"]) % 10000
        regions: list[np.ndarray] = []
        if "ignore_regions_x" in im and "ignore_regions_y" in im:
            regions = _polygons_from_xy(im["ignore_regions_x"], im["ignore_regions_y"], where)
        frame = Frame(
            image_id=int(im["id"]),
            file_name=file_name,
            frame_index=idx,
            is_labeled=bool(im.get("is_labeled", bool(by_image.get(int(im["id"]))))),
            width=optional_int(im.get("width")),
            height=optional_int(im.get("height")),
            persons=by_image.get(int(im["id"]), []),
            ignore_regions=regions,
            raw=im,
        )
        video = videos.get(key)
        if video is None:
            video = Video(
                name=key,
                frames=[],
                nframes=optional_int(im.get("nframes")),
                source=path,
                format=fmt,
                keypoint_names=names,
            )
            videos[key] = video
        video.frames.append(frame)
    if require_annotations:  # a prediction for an image the file does not list would be scored as nothing
        listed = {f.image_id for v in videos.values() for f in v.frames}
        orphans = sorted(set(by_image) - listed)
        if orphans:
            n = sum(len(by_image[i]) for i in orphans)
            raise DataError(
                f"{path}: {n} prediction(s) have image ids {orphans[:5]}{' ...' if len(orphans) > 5 else ''} "
                "that match no entry of 'images' (the ground truth's ids): write the GT image ids"
            )
    return list(videos.values())


def _video_from_2017(data: dict[str, Any], path: Path) -> Video:
    annolist = data["annolist"]
    if not isinstance(annolist, list):
        raise DataError(f"{path}: 'annolist' must be a list")
    frames: list[Frame] = []
    for i, entry in enumerate(annolist):
        where = f"{path} annolist[{i}]"
        try:
            file_name = str(entry["image"][0]["name"])
        except (KeyError, IndexError, TypeError):
            raise DataError(f"{where}: needs image[0].name") from None
        imgnum = optional_int(entry.get("imgnum"))
        idx = imgnum - 1 if imgnum is not None else (frame_number(file_name) or i)
        regions = []
        for r, region in enumerate(entry.get("ignore_regions") or []):
            pts = region.get("point", []) if isinstance(region, dict) else []
            regions.append(
                np.asarray(
                    [
                        [json_number(p["x"], "x", f"{where} region {r}"), json_number(p["y"], "y", where)]
                        for p in pts
                    ],
                    dtype=np.float64,
                ).reshape(-1, 2)
            )
        rects = entry.get("annorect") or []
        persons = [_person_from_2017(rect, f"{where} annorect[{j}]") for j, rect in enumerate(rects)]
        is_labeled = _one(entry.get("is_labeled"))
        frames.append(
            Frame(
                image_id=_image_id_2017(file_name, idx, i),
                file_name=file_name,
                frame_index=idx,
                is_labeled=bool(is_labeled) if is_labeled is not None else bool(persons),
                width=None,
                height=None,
                persons=persons,
                ignore_regions=regions,
                raw=entry,
            )
        )
    return Video(name=path.stem, frames=frames, nframes=None, source=path, format=FORMAT_2017)


def _image_id_2017(file_name: str, frame_index: int, position: int) -> int:
    """PoseTrack18-style id ``TSSSSSSFFFF`` from a folder like ``012834_mpii``, else a running number."""
    m = re.match(r"^(\d+)_(mpiinew|mpii|bonn)", Path(file_name).parent.name)
    if not m:
        return position
    source = {"mpii": 1, "bonn": 2, "mpiinew": 3}[m.group(2)]
    return int(f"{source}{int(m.group(1)):06d}{frame_index:04d}")


def _person_from_2017(rect: dict[str, Any], where: str) -> Person:
    keypoints = np.zeros((NUM_JOINTS, 3), dtype=np.float64)
    labeled = np.zeros(NUM_JOINTS, dtype=bool)
    scores = np.full(NUM_JOINTS, np.nan)
    any_score = False
    annopoints = rect.get("annopoints") or []
    has_entry = (
        bool(annopoints)
        and isinstance(annopoints[0], dict)
        and bool(annopoints[0])
        and ("point" in annopoints[0])
    )
    points = (annopoints[0].get("point") or []) if has_entry else []
    for p in points:
        pid = optional_int(p.get("id"))
        if pid is None or not 0 <= pid < len(POSEVAL_JOINTS):
            continue
        dst = POSEVAL_TO_POSETRACK[pid]
        if labeled[dst]:  # poseval reads the first point with a given id
            continue
        vis = _one(p.get("is_visible"))
        x, y = json_number(p["x"], "x", where), json_number(p["y"], "y", where)
        keypoints[dst] = (x, y, 1.0 if vis is None else float(vis))
        labeled[dst] = True
        if p.get("score") is not None:
            scores[dst] = json_number(p["score"], "score", where)
            any_score = True
    head = None
    if all(k in rect for k in ("x1", "y1", "x2", "y2")):
        x1, y1 = json_number(rect["x1"], "x1", where), json_number(rect["y1"], "y1", where)
        x2, y2 = json_number(rect["x2"], "x2", where), json_number(rect["y2"], "y2", where)
        head = np.asarray([x1, y1, x2 - x1, y2 - y1], dtype=np.float64)
    bbox = None
    if labeled.any():  # poseval's convert: labelled-keypoint extent enlarged 1.3x about its centre
        pts = keypoints[labeled, :2]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        c, ext = (lo + hi) / 2.0, hi - lo
        bbox = np.asarray([c[0] - ext[0] * 0.65, c[1] - ext[1] * 0.65, ext[0] * 1.3, ext[1] * 1.3])
    score = rect.get("score")
    return Person(
        keypoints=keypoints,
        bbox_xywh=bbox,
        head_box_xywh=head,
        track_id=optional_int(rect.get("track_id")),
        score=None if _one(score) is None else json_number(score, "score", where),
        labeled=labeled,
        keypoint_scores=scores if any_score else None,
        has_points_entry=has_entry,
    )


def load_annotation_file(path: str | Path, *, require_annotations: bool = False) -> list[Video]:
    """All videos in one annotation file (one for per-video files, several for a merged file).

    Every value is checked as the toolkit's writer writes it (integer ids, finite keypoints and
    scores, keypoints on every PoseTrack18 person); errors name the file and the field.
    ``require_annotations``: a 2018/2021 file must have an ``annotations`` list (prediction files).
    """
    path = Path(path)
    data = load_json(path)
    try:
        fmt = detect_format(data)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    if fmt == FORMAT_2017:
        return [_video_from_2017(data, path)]
    images = [im for im in data.get("images") or [] if isinstance(im, dict)]
    folders = {Path(str(im.get("file_name", ""))).parent.name for im in images}
    return _videos_from_coco(
        data, path, fmt, single_video=len(folders) <= 1, require_annotations=require_annotations
    )


def poseval_head_size(head_box_xywh: np.ndarray) -> float:
    """poseval's ``getHeadSize``: 0.6 x the head box diagonal, from corners ``(x, y)`` and ``(x+w, y+h)``."""
    x1, y1, w, h = (float(v) for v in head_box_xywh)
    x2, y2 = x1 + w, y1 + h
    return float(0.6 * np.linalg.norm(np.subtract([x2, y2], [x1, y1])))
