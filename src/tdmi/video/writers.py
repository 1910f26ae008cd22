"""Outputs of a video run: PoseTrack18 JSON, a per-joint CSV, an overlay video and a contact sheet.

All are written through :func:`tdmi.utils.atomic_path`; the overlay video streams into a temp file
beside its target (``….tmp.mp4``: OpenCV picks the container by the extension) and is renamed at the
end. The overlay is H.264 where this OpenCV's FFmpeg can encode it (browsers play it), else MPEG-4
Part 2; which one is reported.
"""

from __future__ import annotations

import colorsys
import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tdmi.errors import DataError, TdmiError
from tdmi.eval.io import CATEGORY, SKELETON
from tdmi.spec.joints import POSETRACK_JOINTS
from tdmi.utils import atomic_path, write_bytes_atomic, write_text_atomic
from tdmi.video.pipeline import InferResult, PersonPose
from tdmi.video.source import quiet_video_log


@dataclass(frozen=True)
class VideoCodec:
    """An overlay encoding: the FourCC OpenCV is asked for, and what it is called."""

    fourcc: str
    name: str  # FFmpeg's codec name, as ffprobe prints it
    label: str
    browser_playable: bool

    def to_dict(self) -> dict[str, Any]:
        return {"codec": self.name, "fourcc": self.fourcc, "browser_playable": self.browser_playable}


# Tried in order. The opencv-python wheels carry no H.264 encoder (FFmpeg without libx264/openh264),
# so there the overlay is MPEG-4 Part 2; an OpenCV built on an FFmpeg with one writes H.264.
OVERLAY_CODECS = (
    VideoCodec("avc1", "h264", "H.264", True),
    VideoCodec("mp4v", "mpeg4", "MPEG-4 Part 2", False),
)


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per track (golden-ratio hue steps)."""
    h = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_poses(image: np.ndarray, poses: Sequence[PersonPose], min_score: float = 0.0) -> np.ndarray:
    """Skeleton per person in its track colour; joint dots sized and shaded by confidence."""
    out = image.copy()
    scale = max(1.0, min(out.shape[:2]) / 360.0)
    for p in poses:
        col = track_colour(p.track_id)
        kp, sc = p.keypoints, np.clip(p.scores, 0.0, 1.0)
        for a, b in SKELETON:
            a, b = a - 1, b - 1
            if a < len(kp) and b < len(kp) and min(p.scores[a], p.scores[b]) >= min_score:
                pa, pb = tuple(int(np.rint(v)) for v in kp[a]), tuple(int(np.rint(v)) for v in kp[b])
                cv2.line(out, pa, pb, col, max(1, int(2 * scale)), cv2.LINE_AA)
        for j, (x, y) in enumerate(kp):
            if p.scores[j] < min_score:
                continue
            c = tuple(int(v * (0.35 + 0.65 * sc[j])) for v in col)
            cv2.circle(
                out,
                (int(np.rint(x)), int(np.rint(y))),
                max(2, int((2 + 4 * sc[j]) * scale)),
                c,
                -1,
                cv2.LINE_AA,
            )
        x0, y0 = int(p.box[0]), int(p.box[1])
        label = f"id {p.track_id} {float(np.mean(p.scores)):.2f}"
        cv2.putText(
            out,
            label,
            (max(0, x0), max(12, y0 + int(12 * scale))),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45 * scale,
            col,
            max(1, int(scale)),
            cv2.LINE_AA,
        )
    return out


class OverlayWriter:
    """Streams overlay frames into the temp video; ``codec`` is the first of ``codecs`` that opens."""

    def __init__(
        self, path: Path, fps: float, size: tuple[int, int], codecs: Sequence[VideoCodec] = OVERLAY_CODECS
    ) -> None:
        self.path = path
        self.size = size  # (W, H)
        self.frames_written = 0
        with quiet_video_log():  # a codec FFmpeg lacks is not an error worth its log lines
            for codec in codecs:
                self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*codec.fourcc), fps, size)
                if self._writer.isOpened():
                    self.codec = codec
                    break
            else:
                tried = ", ".join(f"{c.label} ({c.fourcc})" for c in codecs)
                raise TdmiError(
                    f"OpenCV cannot write {tried} video to {path}: no video support in this OpenCV?"
                )

    def write(self, image: np.ndarray) -> None:
        self._writer.write(image)
        self.frames_written += 1

    def close(self) -> None:
        self._writer.release()


def drawing_sink(
    writer: Any | None, contact: ContactSheet | None
) -> Callable[[int, np.ndarray, Sequence[PersonPose]], None]:
    """A pipeline sink that draws each frame's poses once, into the overlay and the contact sheet
    (a no-op when neither is written): stored videos and live streams share it."""

    def sink(index: int, image: np.ndarray, poses: Sequence[PersonPose]) -> None:
        if writer is None and contact is None:
            return
        drawn = draw_poses(image, poses)
        if writer is not None:
            writer.write(drawn)
        if contact is not None:
            contact.offer(index, drawn)

    return sink


@contextlib.contextmanager
def overlay_video(
    target: Path, fps: float, size: tuple[int, int], codecs: Sequence[VideoCodec] = OVERLAY_CODECS
) -> Iterator[OverlayWriter]:
    """An overlay video written atomically: nothing appears at ``target`` unless the block succeeds.

    The temp file is ``.<name>.tdmi-<pid>-<random>.tmp.mp4`` beside ``target``, a name the sweeper
    removes after a ``kill -9``.
    """
    with atomic_path(target, keep_suffix=True) as tmp:
        writer = OverlayWriter(tmp, fps, size, codecs)
        try:
            yield writer
            writer.close()
            if writer.frames_written == 0 or tmp.stat().st_size == 0:
                raise TdmiError(f"no overlay frames were written to {target}")
        finally:
            writer.close()


class ContactSheet:
    """Keeps a bounded, evenly spread sample of overlay thumbnails while the video streams."""

    def __init__(self, count: int = 6, thumb_width: int = 480) -> None:
        self.count = count
        self.thumb_width = thumb_width
        self.stride = 1
        self.thumbs: list[tuple[int, np.ndarray]] = []

    def offer(self, index: int, image: np.ndarray) -> None:
        if index % self.stride:
            return
        h, w = image.shape[:2]
        tw = min(self.thumb_width, w)
        thumb = cv2.resize(image, (tw, max(1, round(h * tw / w))), interpolation=cv2.INTER_AREA)
        self.thumbs.append((index, thumb))
        if len(self.thumbs) > 2 * self.count:
            self.stride *= 2
            self.thumbs = [t for t in self.thumbs if t[0] % self.stride == 0]

    def render(self, cols: int = 3) -> np.ndarray:
        if not self.thumbs:
            raise DataError("no frames for the contact sheet")
        picks = np.linspace(0, len(self.thumbs) - 1, min(self.count, len(self.thumbs))).round().astype(int)
        chosen = [self.thumbs[i] for i in sorted(set(picks.tolist()))]
        th, tw = chosen[0][1].shape[:2]
        cols = min(cols, len(chosen))
        rows = -(-len(chosen) // cols)
        sheet = np.full((rows * (th + 4) + 4, cols * (tw + 4) + 4, 3), 255, np.uint8)
        for n, (idx, img) in enumerate(chosen):
            r, c = divmod(n, cols)
            y, x = 4 + r * (th + 4), 4 + c * (tw + 4)
            sheet[y : y + th, x : x + tw] = img
            cv2.putText(
                sheet, f"frame {idx}", (x + 6, y + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2
            )
        return sheet


def write_png(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise TdmiError(f"OpenCV could not encode the PNG for {path}")
    write_bytes_atomic(path, buf.tobytes())


def posetrack_json(
    result: InferResult,
    video_name: str,
    file_names: Sequence[str],
    gt_images: Mapping[int, Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """PoseTrack18 predictions (``track_id`` per person), plus a ``tdmi`` run record (and ``extra``).

    ``gt_images`` (frame index -> the annotation's ``images`` entry, when the boxes came from
    PoseTrack ground truth): the images are those entries as given, and poses carry their ids, so
    ``tdmi-eval`` pairs them with that ground truth. Otherwise one image per frame, ids from 0.
    """
    if gt_images is not None:
        images = [dict(im) for _, im in sorted(gt_images.items())]
        ids = {f: int(im["id"]) for f, im in gt_images.items()}
    else:
        images = [
            {
                "id": i,
                "frame_id": i,
                "file_name": file_names[i] if i < len(file_names) else f"{video_name}/{i:06d}.jpg",
                "vid_id": video_name,
                "nframes": result.num_frames,
                "is_labeled": True,
                "width": result.width,
                "height": result.height,
            }
            for i in range(result.num_frames)
        ]
        ids = {i: i for i in range(result.num_frames)}
    anns = []
    for n, p in enumerate(result.poses):
        if p.frame not in ids:
            raise DataError(f"a pose on frame {p.frame}, which the annotation's images do not list")
        kp = np.concatenate([p.keypoints.astype(np.float64), p.scores[:, None].astype(np.float64)], axis=1)
        if not np.isfinite(kp).all():
            raise DataError(
                f"non-finite keypoints on frame {p.frame}, track {p.track_id}: the model output NaN/inf"
            )
        anns.append(
            {
                "id": n,
                "image_id": ids[p.frame],
                "track_id": p.track_id,
                "category_id": 1,
                "keypoints": [round(float(v), 3) for v in kp.reshape(-1)],
                "scores": [round(float(v), 5) for v in p.scores],
                "bbox": [round(float(v), 2) for v in p.box],
                "score": round(float(np.mean(p.scores)), 5),
            }
        )
    return {
        "images": images,
        "annotations": anns,
        "categories": [CATEGORY],
        "tdmi": {"config": result.config.to_dict(), **result.summary(), **(extra or {})},
    }


def csv_text(result: InferResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["frame", "track", "joint", "x", "y", "score"])
    for p in result.poses:
        for j, name in enumerate(POSETRACK_JOINTS[: len(p.scores)]):
            w.writerow(
                [
                    p.frame,
                    p.track_id,
                    name,
                    f"{p.keypoints[j, 0]:.3f}",
                    f"{p.keypoints[j, 1]:.3f}",
                    f"{p.scores[j]:.5f}",
                ]
            )
    return buf.getvalue()


def write_tables(
    result: InferResult,
    json_path: Path,
    csv_path: Path,
    video_name: str,
    file_names: Sequence[str],
    gt_images: Mapping[int, Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    doc = posetrack_json(result, video_name, file_names, gt_images, extra)
    write_text_atomic(json_path, json.dumps(doc))
    write_text_atomic(csv_path, csv_text(result))
