"""Live sources for ``tdmi-infer``: a camera index (``0``) or a stream URL (RTSP, HTTP MJPEG, ...).

Online mode reuses :func:`tdmi.video.pipeline.run_video` unchanged: it already assembles a key
frame's clip as soon as the frames it needs have arrived (one frame of delay at T=3, two at T=5) and
clamps the edges at the end, so the online poses are the offline poses of the same frames. This
module adds what a stream needs around it: a reader thread (OpenCV's FFmpeg), arrival times, a stall
timeout, JSON lines written as each frame's poses are known, and latency figures (frame arrival ->
pose out, p50/p99) in the run record.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from tdmi.errors import ConfigError, DataError
from tdmi.spec.choices import BoxPolicy
from tdmi.spec.decoding import Refine
from tdmi.stats import percentile
from tdmi.video.infer import InferOutputs
from tdmi.video.source import DEFAULT_FPS

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
DEFAULT_STALL_TIMEOUT = 10.0
_END = object()


def is_live(spec: str | Path) -> bool:
    """A camera index (``0``) or a stream URL, as opposed to a file or folder path."""
    s = str(spec)
    return s.isdigit() or s.lower().startswith(STREAM_SCHEMES)


def live_name(spec: str) -> str:
    """A file-name-safe name for the outputs: ``camera0``, or the URL's last path part (or host)."""
    if spec.isdigit():
        return f"camera{spec}"
    rest = spec.split("://", 1)[1].split("?")[0].rstrip("/")
    last = rest.rsplit("/", 1)[-1] if "/" in rest else rest
    stem = last.rsplit(".", 1)[0] if "." in last and "/" in rest else last
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "stream"


def _redact(spec: str) -> str:
    """The URL without user:password, for messages and the run record."""
    return re.sub(r"://[^/@]*@", "://***@", spec)


@dataclass
class LiveSource:
    """A stream read by a background thread; ``frames()`` yields BGR frames as they arrive.

    It has what :func:`run_video` reads from a :class:`tdmi.video.source.VideoSource` (``kind`` is
    ``"live"``; ``num_frames`` is unknown), plus ``arrivals`` (perf_counter per frame) and
    ``end_reason`` (``ended``, ``stalled``, ``max-frames`` or ``interrupted``) once it stops.
    """

    spec: str
    fps: float
    width: int
    height: int
    stall_timeout: float
    max_frames: int | None = None
    kind: str = "live"
    num_frames: int | None = None
    files: list[Path] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    end_reason: str | None = None
    on_frame: Callable[[int, np.ndarray], None] | None = None  # e.g. the detector + online tracker
    stop: threading.Event = field(default_factory=threading.Event)  # set (e.g. by Ctrl-C): end cleanly
    _cap: Any = None
    _first: np.ndarray | None = None
    _first_t: float = 0.0

    @property
    def path(self) -> Path:
        return Path(live_name(self.spec))

    @property
    def name(self) -> str:
        return live_name(self.spec)

    @property
    def display(self) -> str:
        return _redact(self.spec)

    def frames(self) -> Iterator[np.ndarray]:
        if self._first is None:
            raise DataError(f"{self.display}: the stream was already read (a live source is read once)")
        q: queue.Queue[Any] = queue.Queue()
        halt = threading.Event()
        cap = self._cap

        def reader() -> None:
            last = time.perf_counter()
            try:
                while not halt.is_set():
                    ok, img = cap.read()
                    now = time.perf_counter()
                    if not ok or img is None:
                        # OpenCV's FFmpeg gives up after its read timeout (= the stall timeout)
                        q.put((_END, "stalled" if now - last >= 0.9 * self.stall_timeout else "ended"))
                        return
                    last = now
                    q.put((img, now))
            except Exception as e:  # a backend error ends the stream; the consumer reports it
                q.put((_END, f"ended ({type(e).__name__}: {str(e)[:120]})"))
            finally:
                cap.release()  # the reader owns the capture: never released under a read in progress

        first, self._first = self._first, None
        self.arrivals.append(self._first_t)
        thread = threading.Thread(target=reader, name="tdmi-live-reader", daemon=True)
        thread.start()
        try:
            if self.on_frame is not None:
                self.on_frame(0, first)
            yield first
            count = 1
            while True:
                if self.max_frames is not None and count >= self.max_frames:
                    self.end_reason = "max-frames"
                    return
                got = self._next(q)
                if got is None:
                    return
                item, info = got
                if item is _END:
                    self.end_reason = info
                    return
                if item.shape[:2] != (self.height, self.width):
                    raise DataError(
                        f"{self.display}: frame {count} is {item.shape[1]}x{item.shape[0]} but frame 0 is "
                        f"{self.width}x{self.height}: the stream changed size"
                    )
                self.arrivals.append(info)
                if self.on_frame is not None:
                    self.on_frame(count, item)
                count += 1
                yield item
        finally:
            # a read blocked on a silent stream returns at its timeout; the reader then stops and
            # releases the capture by itself, so a stop request does not wait for it
            halt.set()
            thread.join(timeout=1.0)

    def _next(self, q: queue.Queue[Any]) -> tuple[Any, Any] | None:
        """The reader's next item; None (with ``end_reason`` set) on a stop request or a stall.

        The reader's own timeout normally reports a stall first; the deadline here is a backstop for
        backends (cameras) that ignore OpenCV's read timeout.
        """
        deadline = time.monotonic() + self.stall_timeout + 1.0
        while True:
            if self.stop.is_set():
                self.end_reason = "interrupted"
                return None
            try:
                return q.get(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    self.end_reason = "stalled"
                    return None


@contextlib.contextmanager
def stop_on_sigint(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C sets ``stop`` (the stream ends cleanly, outputs written) instead of aborting the run."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda _s, _f: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def open_live(
    spec: str,
    *,
    fps: float | None = None,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    max_frames: int | None = None,
) -> LiveSource:
    """Open a camera index or stream URL and read its first frame (for the size); errors are one line."""
    import cv2

    if not stall_timeout > 0:
        raise ConfigError(f"--stall-timeout must be > 0 seconds, got {stall_timeout}")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {max_frames}")
    ms = int(1000 * stall_timeout)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    shown = _redact(spec)
    if spec.isdigit():
        cap = cv2.VideoCapture(int(spec), cv2.CAP_ANY, params)
    else:
        cap = cv2.VideoCapture(spec, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        what = f"camera {spec}" if spec.isdigit() else f"stream {shown}"
        raise DataError(f"cannot open {what}: not reachable, or not a source OpenCV's FFmpeg can read")
    ok, first = cap.read()
    t = time.perf_counter()
    if not ok or first is None:
        cap.release()
        raise DataError(f"{shown}: no frame arrived within {stall_timeout:g} s (--stall-timeout)")
    src_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    use_fps = fps or (src_fps if 0 < src_fps < 1000 and np.isfinite(src_fps) else DEFAULT_FPS)
    return LiveSource(
        spec,
        use_fps,
        first.shape[1],
        first.shape[0],
        stall_timeout,
        max_frames,
        _cap=cap,
        _first=first,
        _first_t=t,
    )


def pose_record(index: int, poses: list[Any], arrival: float | None, out_t: float) -> dict[str, Any]:
    """One JSON line: a frame's poses (image pixels) and its latency from arrival to out."""
    return {
        "frame": index,
        "latency_ms": round(1000 * (out_t - arrival), 3) if arrival is not None else None,
        "persons": [
            {
                "track_id": int(p.track_id),
                "keypoints": [[round(float(x), 3), round(float(y), 3)] for x, y in p.keypoints],
                "scores": [round(float(s), 5) for s in p.scores],
                "bbox": [round(float(v), 2) for v in p.box],
            }
            for p in poses
        ],
    }


@contextlib.contextmanager
def jsonl_stream(target: str | Path | None) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """Write JSON lines as they come (flushed per line) to stdout (``-``) or a file; None: no stream.

    The file is not staged: a stream's lines are kept even when the run ends early.
    """
    if target is None:
        yield None
        return
    if str(target) == "-":
        out: IO[str] = sys.stdout
        close = False
    else:
        try:
            out = open(target, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        except OSError as e:
            raise DataError(f"cannot write --jsonl {target}: {e.strerror or e}") from None
        close = True

    def emit(record: dict[str, Any]) -> None:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        out.flush()

    try:
        yield emit
    finally:
        if close:
            out.close()


@dataclass
class LatencyLog:
    """Per frame: arrival (from the source) and pose-out times; summarised for the run record."""

    after: int  # frames past the key frame that its clip needs (1 at T=3, 2 at T=5)
    out_t: dict[int, float] = field(default_factory=dict)

    def summary(self, arrivals: list[float], wall_s: float) -> dict[str, Any]:
        idx = sorted(i for i in self.out_t if i < len(arrivals))
        lat = np.array([self.out_t[i] - arrivals[i] for i in idx]) * 1000
        # from the arrival of the last frame the clip needs: the pipeline's own work (+ queueing)
        ready = [arrivals[min(i + self.after, len(arrivals) - 1)] for i in idx]
        work = np.array([self.out_t[i] - r for i, r in zip(idx, ready, strict=True)]) * 1000

        def pct(a: np.ndarray, q: float) -> float | None:
            return round(percentile(a.tolist(), q), 3) if len(a) else None

        span = (max(self.out_t.values()) - arrivals[0]) if self.out_t and arrivals else 0.0
        return {
            "frames_out": len(idx),
            "delay_frames": self.after,
            "latency_ms_p50": pct(lat, 50),
            "latency_ms_p99": pct(lat, 99),
            "latency_ms_max": pct(lat, 100),
            "after_window_ms_p50": pct(work, 50),
            "after_window_ms_p99": pct(work, 99),
            "frames_per_s": round(len(idx) / span, 3) if span > 0 else 0.0,
            "wall_s": round(wall_s, 3),
        }


@dataclass
class LiveOutputs(InferOutputs):
    """A live run's outputs: those of a stored video, the JSON lines, and why the stream ended."""

    jsonl: str | None = None
    end_reason: str = "ended"

    def written(self) -> list[Path]:
        return super().written() + ([Path(self.jsonl)] if self.jsonl not in (None, "-") else [])


def infer_live(
    spec: str,
    out_dir: str | Path,
    predictor: Any,
    *,
    frame_predictor: Any | None = None,
    full_frame: bool = False,
    detector: Any | None = None,
    iou_threshold: float = 0.3,
    box_policy: BoxPolicy = "key",
    refine: Refine = "quarter",
    overlay: bool = True,
    sheet: bool = True,
    jsonl: str | Path | None = None,
    fps: float | None = None,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    max_frames: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> LiveOutputs:
    """Pose-track a live source online: each frame's poses go out as soon as its clip is complete.

    Person boxes: ``full_frame``, or ``detector`` (a :class:`tdmi.video.detector.Detector`) with the
    IoU tracker fed frame by frame. The JSON lines (``jsonl``: a path or ``-`` for stdout) are written
    as poses come; the overlay streams into a staged file; the PoseTrack JSON and CSV are written when
    the stream ends, stalls, or reaches ``max_frames``.
    """
    from tdmi.video.infer import RunFiles, detector_report, output_paths
    from tdmi.video.pipeline import run_video

    out = _check_live_options(out_dir, full_frame, detector, box_policy, jsonl)
    source = open_live(spec, fps=fps, stall_timeout=stall_timeout, max_frames=max_frames)
    paths = output_paths(out, source.name)
    tracks = _live_tracks(source, detector, iou_threshold)
    runner = frame_predictor if frame_predictor is not None else predictor
    log = LatencyLog(runner.config.num_frames - 1 - runner.config.num_frames // 2)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(stop_on_sigint(source.stop))
        emit = stack.enter_context(jsonl_stream(jsonl))
        files = RunFiles(stack, paths, source, overlay, sheet)

        def sink(index: int, image: np.ndarray, poses: list[Any]) -> None:
            now = time.perf_counter()
            log.out_t[index] = now
            if emit is not None:
                arrival = source.arrivals[index] if index < len(source.arrivals) else None
                emit(pose_record(index, poses, arrival, now))
            files.draw(index, image, poses)

        result = run_video(
            source,  # type: ignore[arg-type]  # a LiveSource reads like a VideoSource
            tracks,
            predictor,
            frame_predictor=frame_predictor,
            box_policy=box_policy,
            refine=refine,
            sink=sink,
            progress=(lambda done: progress(done, None)) if progress else None,
        )
        reason = source.end_reason or "ended"
        result.extra["live"] = {
            "source": source.display,
            "end": reason,
            "stall_timeout_s": stall_timeout,
            **log.summary(source.arrivals, time.perf_counter() - t0),
        }
        if detector is not None:
            result.extra["detector"] = detector_report(detector, result, inline=True)
        done = files.finish(result, source.name, [])
    return LiveOutputs(**done, jsonl=None if jsonl is None else str(jsonl), end_reason=reason)


def _check_live_options(
    out_dir: str | Path, full_frame: bool, detector: Any, box_policy: str, jsonl: str | Path | None
) -> Path:
    """The options a live source refuses, and the output folder (made) and --jsonl file (checked)."""
    from tdmi.utils import check_outputs

    if full_frame == (detector is not None):
        raise DataError(
            "a live source takes person boxes from --full-frame or --detector DET.onnx (one of them); "
            "--boxes files are for stored videos"
        )
    if detector is not None and box_policy == "smoothed":
        raise ConfigError(
            "--box-policy smoothed needs boxes past the key frame's clip: use key or frame on a live source"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} is a file: -o takes a folder")
    out.mkdir(parents=True, exist_ok=True)
    if jsonl is not None and str(jsonl) != "-":
        check_outputs({"--jsonl": jsonl})
    return out


def _live_tracks(source: LiveSource, detector: Any, iou_threshold: float) -> list[Any]:
    """The whole frame, or detector boxes linked online (the list grows as frames arrive: the
    pipeline reads it at each key frame)."""
    from tdmi.video.boxes import IouTracker, full_frame_tracks

    if detector is None:
        return full_frame_tracks(source.width, source.height)
    tracker = IouTracker(iou_threshold)
    source.on_frame = lambda i, img: tracker.update(i, detector.dets(img))
    return tracker.tracks
