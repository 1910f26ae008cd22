"""Frames from a video file (OpenCV) or a folder of images, streamed, with size checks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tdmi.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FPS = 25.0


@dataclass
class VideoSource:
    """Where frames come from; ``frames()`` yields BGR uint8 images of one size, in order."""

    path: Path
    kind: str  # "video" or "frames"
    fps: float
    width: int
    height: int
    num_frames: int | None  # exact for a folder; OpenCV's estimate (may be wrong) for a video
    files: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem if self.kind == "video" else self.path.name

    def frames(self) -> Iterator[np.ndarray]:
        if self.kind == "frames":
            for i, f in enumerate(self.files):
                img = cv2.imread(str(f), cv2.IMREAD_COLOR)
                if img is None:
                    raise DataError(f"cannot read frame {i} ({f}): not an image OpenCV can decode")
                self._check_size(img, i, f.name)
                yield img
            return
        cap = cv2.VideoCapture(str(self.path))
        try:
            i = 0
            while True:
                ok, img = cap.read()
                if not ok:
                    break
                self._check_size(img, i, f"frame {i}")
                yield img
                i += 1
        finally:
            cap.release()

    def _check_size(self, img: np.ndarray, index: int, what: str) -> None:
        if img.shape[:2] != (self.height, self.width):
            raise DataError(
                f"{self.path}: {what} is {img.shape[1]}x{img.shape[0]} but frame 0 is "
                f"{self.width}x{self.height}: all frames must have the same size"
            )


def open_source(path: str | Path, fps: float | None = None) -> VideoSource:
    """Open ``path`` (a video file or a folder of images); unreadable or empty input is an error."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"input {p} does not exist: give a video file or a folder of frames")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not files:
            raise DataError(f"folder {p} holds no images ({', '.join(IMAGE_SUFFIXES)}): nothing to process")
        first = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise DataError(f"cannot read frame 0 ({files[0]}): not an image OpenCV can decode")
        return VideoSource(p, "frames", fps or DEFAULT_FPS, first.shape[1], first.shape[0], len(files), files)
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise DataError(f"cannot open video {p}: not a video OpenCV can decode (or unreadable)")
        ok, first = cap.read()
        if not ok or first is None:
            raise DataError(f"video {p} has no frames: nothing to process")
        src_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    use_fps = fps or (src_fps if src_fps > 0 and np.isfinite(src_fps) else DEFAULT_FPS)
    return VideoSource(p, "video", use_fps, first.shape[1], first.shape[0], count or None)
