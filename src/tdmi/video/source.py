"""Frames from a video file (OpenCV) or a folder of images, streamed, with size and damage checks.

What a reader delivers is checked against what the input promised: a video must yield the frame
count its container declares (a damaged or truncated file stops early; that is an error naming the
first lost frame, or with ``allow_short`` one warning with the count), and every image of a folder
must decode whole (``cv2.imread`` fills a truncated JPEG with grey; see :func:`read_image`). FFmpeg's
own log is off (:func:`quiet_video_log`): the check above says what was lost, once.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tdmi.errors import DataError

# FFmpeg's av_log level for OpenCV's FFmpeg back end: AV_LOG_QUIET. OpenCV reads it once, when FFmpeg
# is first used in the process (checked with OpenCV 5.0); set OPENCV_FFMPEG_LOGLEVEL yourself (e.g.
# 24, AV_LOG_WARNING) to see FFmpeg's messages again.
FFMPEG_QUIET = "-8"


@contextlib.contextmanager
def quiet_video_log() -> Iterator[None]:
    """FFmpeg's log off (for the process) and OpenCV's own log off (for the block).

    A damaged file otherwise prints thousands of decoder lines, and probing an encoder that is not
    built prints errors; our checks report both in one line instead. A user who set
    OPENCV_FFMPEG_LOGLEVEL (OpenCV then routes FFmpeg's lines through its own log) sees them.
    """
    if os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", FFMPEG_QUIET) != FFMPEG_QUIET:
        yield
        return
    log = cv2.utils.logging
    previous = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        log.setLogLevel(previous)


def read_image(path: Path, index: int) -> np.ndarray:
    """One frame of a folder, decoded whole, or an error naming the file.

    Decoded from the file's bytes: ``cv2.imread`` returns a cut-short JPEG as a grey-filled image,
    while ``cv2.imdecode`` refuses it (OpenCV 5.0; tested).
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read frame {index} ({path}): {e.strerror or e}") from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(
            f"cannot read frame {index} ({path}): not an image OpenCV can decode (damaged or cut short?): "
            "replace or remove the file"
        )
    return img


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
    num_frames: int | None  # exact for a folder; the container's declared count for a video
    files: list[Path] = field(default_factory=list)
    allow_short: bool = False  # a video that yields fewer frames than declared: warn, not fail

    @property
    def name(self) -> str:
        return self.path.stem if self.kind == "video" else self.path.name

    def frames(self) -> Iterator[np.ndarray]:
        if self.kind == "frames":
            for i, f in enumerate(self.files):
                img = read_image(f, i)
                self._check_size(img, i, f.name)
                yield img
            return
        with quiet_video_log():
            cap = cv2.VideoCapture(str(self.path))
        try:
            i = 0
            while True:
                with quiet_video_log():
                    ok, img = cap.read()
                if not ok:
                    break
                self._check_size(img, i, f"frame {i}")
                yield img
                i += 1
        finally:
            cap.release()
        self._check_count(i)

    def _check_count(self, got: int) -> None:
        """Frames delivered against the container's count: a shortfall is lost frames, never silent."""
        want = self.num_frames
        if want is None or got >= want:
            return
        if self.allow_short:
            warnings.warn(
                f"{self.path}: {want - got} of {want} frames could not be decoded (frames {got}..{want - 1}, "
                f"damaged or truncated file); processed the first {got} (--allow-short)",
                stacklevel=2,
            )
            return
        raise DataError(
            f"{self.path}: frame {got} could not be decoded, so frames {got}..{want - 1} are lost "
            f"({got} of the {want} frames the container declares; damaged or truncated file): "
            "repair the file, or pass --allow-short to process the first frames"
        )

    def _check_size(self, img: np.ndarray, index: int, what: str) -> None:
        if img.shape[:2] != (self.height, self.width):
            raise DataError(
                f"{self.path}: {what} is {img.shape[1]}x{img.shape[0]} but frame 0 is "
                f"{self.width}x{self.height}: all frames must have the same size"
            )


def open_source(
    path: str | os.PathLike[str], fps: float | None = None, *, allow_short: bool = False
) -> VideoSource:
    """Open ``path`` (a video file or a folder of images); unreadable or empty input is an error.

    ``allow_short``: a video that decodes fewer frames than its container declares is a warning
    (with the count) instead of an error.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"input {p} does not exist: give a video file or a folder of frames")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not files:
            raise DataError(f"folder {p} holds no images ({', '.join(IMAGE_SUFFIXES)}): nothing to process")
        first = read_image(files[0], 0)
        return VideoSource(p, "frames", fps or DEFAULT_FPS, first.shape[1], first.shape[0], len(files), files)
    with quiet_video_log():
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
    return VideoSource(
        p, "video", use_fps, first.shape[1], first.shape[0], max(count, 0) or None, allow_short=allow_short
    )
