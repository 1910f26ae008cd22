"""Many videos in one ``tdmi-infer`` run: which videos, where each one's outputs go, and the run record.

The scheduler (:func:`run_batch`) is independent of where videos run. An executor takes one video
at a time per slot and reports how it ended: :class:`LocalExecutor` runs them in this process,
:class:`tdmi.video.ray_runner.RayExecutor` on a pool of Ray actors.

Exactly once, whatever dies when:
- a video's outputs are written by the worker that ran it into a temp folder in
  ``OUT/.tdmi-staging/<host>/`` and renamed to ``OUT/<name>`` at the end (:func:`tdmi.utils.atomic_dir`,
  ``exclusive``). The rename is the commit: a killed worker leaves only a temp folder (swept later),
  never half a video, and a second attempt cannot replace a committed folder. Each host has its own
  staging folder: a process id only tells a dead writer from a live one on its own host;
- ``OUT/<name>/video.json`` is written inside that folder before the rename, so a committed video
  is recognised even when the process that should have recorded it died;
- ``OUT/run.json`` (each video's status, frames, persons, seconds, errors) is written atomically by
  the scheduler after every video. A second run with the same ``OUT`` skips committed videos and
  retries failed ones, keeping their earlier errors.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from tdmi.errors import DataError, TdmiError
from tdmi.spec.choices import BoxPolicy, DetectorFormat
from tdmi.spec.decoding import Refine
from tdmi.utils import atomic_dir, sweep_stale_temps, write_text_atomic
from tdmi.video.source import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
MANIFEST_SUFFIXES = (".txt", ".lst")
RUN_RECORD = "run.json"
VIDEO_RECORD = "video.json"  # inside OUT/<name>/: written before the commit rename
STAGING = ".tdmi-staging"  # OUT/.tdmi-staging/<host>/: videos being written, renamed into OUT/<name>/
RECORD_VERSION = 1
MAX_WORKER_DEATHS = 3  # a video whose worker died this often is failed, not retried again in this run


@dataclass(frozen=True)
class VideoJob:
    """One video of the run: its output name (``OUT/<name>/``), its source and its own annotation file."""

    name: str
    source: str
    annotations: str | None = None


@dataclass
class VideoOptions:
    """How every video of a run is processed (``infer_video``'s options); stored in ``run.json``."""

    full_frame: bool = False
    boxes: str | None = None
    annotations: str | None = None  # one PoseTrack file, or a folder of per-video files (<name>.json)
    tracker: bool = True
    score_thr: float = 0.3
    box_policy: BoxPolicy = "key"
    refine: Refine = "quarter"
    overlay: bool = True
    sheet: bool = True
    fps: float | None = None
    allow_short: bool = False
    detector: str | None = None  # person detector ONNX (--detector), loaded once per worker
    detector_format: DetectorFormat | None = None
    det_score: float = 0.3
    det_nms: float = 0.45

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def annotations_for(self, name: str) -> str | None:
        if self.annotations is None:
            return None
        p = Path(self.annotations)
        return str(p / f"{name}.json") if p.is_dir() else str(p)

    def check(self) -> None:
        """Exactly one source of person boxes."""
        from tdmi.video.infer import check_box_source

        check_box_source(self.full_frame, self.boxes, self.detector)

    def resolved(self) -> VideoOptions:
        """Input paths made absolute: the run record names them whatever the working folder, and
        Ray workers read them from theirs."""

        def absolute(path: str | None) -> str | None:
            return str(Path(path).resolve()) if path is not None else None

        return replace(self, annotations=absolute(self.annotations), detector=absolute(self.detector))


def is_frames_folder(p: Path) -> bool:
    return any(f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() for f in p.iterdir())


def _name_of(p: Path) -> str:
    return p.name if p.is_dir() else p.stem


def _expand(p: Path) -> list[Path]:
    """A video, a frame folder, a folder of videos / frame folders, or a manifest (one path a line)."""
    if not p.exists():
        raise DataError(
            f"input {p} does not exist: give videos, frame folders, a folder of them or a .txt list"
        )
    if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
        out = []
        for n, line in enumerate(p.read_text().splitlines(), 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            entry = Path(text).expanduser()
            entry = entry if entry.is_absolute() else p.parent / entry
            if not entry.exists():
                raise DataError(f"{p} line {n}: {text} does not exist")
            out.append(entry)
        if not out:
            raise DataError(f"manifest {p} lists no videos (one path a line, '#' comments)")
        return out
    if p.is_file() or is_frames_folder(p):
        return [p]
    entries = sorted(
        e
        for e in p.iterdir()
        if (e.is_file() and e.suffix.lower() in VIDEO_SUFFIXES) or (e.is_dir() and is_frames_folder(e))
    )
    if not entries:
        raise DataError(
            f"folder {p} holds no videos ({', '.join(VIDEO_SUFFIXES)}) and no frame folders: "
            "nothing to process"
        )
    return entries


def collect_jobs(sources: Sequence[str | os.PathLike[str]], options: VideoOptions) -> list[VideoJob]:
    """The run's videos in order; two videos with one output name are an error (outputs would collide)."""
    if not sources:
        raise DataError("no input: give videos, frame folders, a folder of them or a .txt list")
    jobs: list[VideoJob] = []
    seen: dict[str, str] = {}
    for src in sources:
        for p in _expand(Path(src)):
            name = _name_of(p)
            resolved = str(p.resolve())
            if name in seen:
                if seen[name] == resolved:
                    continue  # listed twice: run once
                raise DataError(
                    f"two inputs are named {name!r} ({seen[name]}, {resolved}): outputs would collide"
                )
            if name == RUN_RECORD or name.startswith("."):
                raise DataError(f"input {p}: the name {name!r} cannot be an output folder")
            seen[name] = resolved
            jobs.append(VideoJob(name, resolved, options.annotations_for(name)))
    return jobs


def check_job_outputs(jobs: Sequence[VideoJob], out_dir: str | os.PathLike[str]) -> None:
    """No video's output folder is (or holds) its own input."""
    out = Path(out_dir)
    for job in jobs:
        target = (out / job.name).resolve()
        if target == Path(job.source) or Path(job.source).is_relative_to(target):
            raise DataError(
                f"output {out / job.name} would overwrite the input {job.source}: choose another -o"
            )


@functools.cache
def _load_detector(path: str, format: DetectorFormat | None, score_thr: float, nms_iou: float) -> Any:
    from tdmi.video.detector import Detector

    return Detector(path, format=format, score_thr=score_thr, nms_iou=nms_iou)


def load_detector(options: VideoOptions, cached: bool = True) -> Any:
    """The run's person detector, one session per process (a worker keeps it across videos);
    ``cached=False``: a new one (its timing counts one video only)."""
    if options.detector is None:
        return None
    load = _load_detector if cached else _load_detector.__wrapped__
    return load(options.detector, options.detector_format, options.det_score, options.det_nms)


def staging_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Where this host's workers build videos before the commit rename: one folder per host, so a
    host sweeps only the temp folders of its own dead processes (``OUT/.tdmi-staging/<host>/``)."""
    return Path(out_dir) / STAGING / socket.gethostname()


def read_video_record(folder: Path) -> dict[str, Any] | None:
    """The commit record of a finished video, or None when ``folder`` holds no finished video."""
    try:
        entry = json.loads((folder / VIDEO_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return entry if isinstance(entry, dict) and entry.get("status") == "done" else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def infer_with_options(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: VideoOptions,
    predictor: Any,
    frame_predictor: Any | None = None,
    *,
    annotations: str | None = None,
    detector: Any | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Any:
    """:func:`tdmi.video.infer.infer_video` with a run's options (one video, or one video of a batch
    with its own ``annotations``); returns its ``InferOutputs``. ``detector``: default, the
    process's (:func:`load_detector`)."""
    from tdmi.video.infer import infer_video

    return infer_video(
        source,
        out_dir,
        predictor,
        frame_predictor=frame_predictor,
        full_frame=options.full_frame,
        boxes=options.boxes,
        annotations=annotations,
        tracker=options.tracker,
        score_thr=options.score_thr,
        box_policy=options.box_policy,
        refine=options.refine,
        overlay=options.overlay,
        sheet=options.sheet,
        fps=options.fps,
        allow_short=options.allow_short,
        detector=detector if detector is not None else load_detector(options),
        progress=progress,
    )


def run_video_job(
    job: VideoJob,
    out_dir: str | os.PathLike[str],
    options: VideoOptions,
    predictor: Any,
    frame_predictor: Any | None = None,
    worker: str = "local",
    progress: Callable[[int, int | None], None] | None = None,
) -> dict[str, Any]:
    """Run one video into ``OUT/<name>/`` and commit it; return its ``video.json`` entry.

    An already committed folder is returned as it is (a retried video is never written twice).
    """
    target = Path(out_dir) / job.name
    done = read_video_record(target)
    if done is not None:
        return done
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DataError(f"{target} exists but holds no finished tdmi output: move it away and run again")
    if job.annotations is not None and options.boxes == "gt" and not Path(job.annotations).is_file():
        raise DataError(f"no annotation file {job.annotations} for video {job.name} (--boxes gt)")
    t0 = time.perf_counter()
    try:
        with atomic_dir(target, force=True, exclusive=True, staging=staging_dir(out_dir)) as tmp:
            out = infer_with_options(
                job.source,
                tmp,
                options,
                predictor,
                frame_predictor,
                annotations=job.annotations,
                progress=progress,
            )
            s = out.result.summary()
            entry = {
                "status": "done",
                "source": job.source,
                "frames": s["frames"],
                "persons": s["persons"],
                "poses": s["poses"],
                "seconds": round(time.perf_counter() - t0, 3),
                "frames_per_s": s["frames_per_s"],
                "backend": s["backend"],
                "worker": worker,
                "finished": _now(),
                "files": sorted(p.name for p in (out.json, out.csv, out.overlay, out.sheet) if p is not None),
            }
            write_text_atomic(tmp / VIDEO_RECORD, json.dumps(entry, indent=1) + "\n")
    except FileExistsError:
        done = read_video_record(target)  # another attempt committed first: keep its outputs
        if done is None:
            raise DataError(f"{target} appeared while {job.name} ran and holds no finished output") from None
        return done
    return entry


@dataclass
class Outcome:
    """How one submitted video ended: its entry (done), an error (failed), or its worker died."""

    job: VideoJob
    entry: dict[str, Any] | None = None
    error: str | None = None
    worker_died: bool = False
    worker: str = ""


class Executor(Protocol):
    """Runs videos: at most ``slots`` at once; ``next_outcome`` blocks until one of them ends."""

    slots: int

    def submit(self, job: VideoJob) -> None: ...

    def next_outcome(self) -> Outcome: ...

    def close(self) -> None: ...


def error_line(e: BaseException) -> str:
    """One line for a video's failure: the library's message, or the type for anything unexpected."""
    text = " ".join(str(e).split())
    return text if isinstance(e, TdmiError) else f"{type(e).__name__}: {text}"


class LocalExecutor:
    """The videos one after another in this process, with one loaded predictor (no ``--ray``)."""

    slots = 1

    def __init__(
        self,
        predictors: tuple[Any, Any],
        out_dir: str | os.PathLike[str],
        options: VideoOptions,
        progress: Callable[[VideoJob, int, int | None], None] | None = None,
    ) -> None:
        self.predictor, self.frame_predictor = predictors
        self.out_dir = Path(out_dir)
        self.options = options
        self.progress = progress
        self._queue: deque[VideoJob] = deque()

    def submit(self, job: VideoJob) -> None:
        self._queue.append(job)

    def next_outcome(self) -> Outcome:
        job = self._queue.popleft()
        report = self.progress
        cb = (lambda done, total: report(job, done, total)) if report is not None else None
        try:
            entry = run_video_job(
                job, self.out_dir, self.options, self.predictor, self.frame_predictor, "local", cb
            )
        except Exception as e:  # one bad video fails alone; Ctrl-C (a BaseException) stops the run
            return Outcome(job, error=error_line(e), worker="local")
        return Outcome(job, entry=entry, worker="local")

    def close(self) -> None:
        self._queue.clear()


@dataclass
class BatchEvent:
    """What the scheduler reports as videos end: ``done``, ``skipped``, ``failed`` or ``retry``."""

    kind: str
    name: str
    entry: dict[str, Any] = field(default_factory=dict)
    message: str = ""


def load_run_record(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / RUN_RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(
            f"{path} is not a readable run record ({e}): move it away or choose another -o"
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("videos"), dict):
        raise DataError(f"{path} is not a tdmi-infer run record: choose another -o folder")
    return record


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def _check_settings(record: dict[str, Any], settings: dict[str, Any], path: Path) -> None:
    old = record.get("settings")
    if old is None or old == settings:
        return
    raise DataError(
        f"{path} was written with other settings ({', '.join(_changed_keys(old, settings))}): its finished "
        "videos would not match this run; choose another -o folder"
    )


def run_batch(
    jobs: Sequence[VideoJob],
    out_dir: str | os.PathLike[str],
    executor: Executor,
    settings: dict[str, Any],
    on_event: Callable[[BatchEvent], None] | None = None,
    max_worker_deaths: int = MAX_WORKER_DEATHS,
) -> dict[str, Any]:
    """Run every unfinished video of ``jobs`` on ``executor``, keeping ``OUT/run.json`` current.

    ``settings`` (model and options) are stored in the record; a later run with other settings is
    refused, so skipped videos always match the rest. Returns the final record. The executor is
    closed at the end, also when interrupted (Ctrl-C): what finished is recorded, the rest runs next time.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} is a file: -o takes a folder")
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / RUN_RECORD
    record = load_run_record(out) or {"version": RECORD_VERSION, "runs": 0, "videos": {}}
    _check_settings(record, settings, record_path)
    record["settings"] = settings
    record["runs"] = run_no = int(record.get("runs", 0)) + 1
    videos: dict[str, dict[str, Any]] = record["videos"]
    emit = on_event or (lambda _e: None)
    sweep_stale_temps(staging_dir(out))  # temp folders of this host's workers killed in an earlier run
    pending = _pending(jobs, videos, out, run_no, emit)
    _save_record(record, record_path)
    deaths: dict[str, int] = {}
    in_flight = 0
    try:
        while pending or in_flight:
            while pending and in_flight < executor.slots:
                job = pending.popleft()
                videos[job.name]["status"] = "running"
                videos[job.name]["attempts"] = int(videos[job.name].get("attempts", 0)) + 1
                executor.submit(job)
                in_flight += 1
            outcome = executor.next_outcome()
            in_flight -= 1
            deaths_now = deaths[outcome.job.name] = deaths.get(outcome.job.name, 0) + outcome.worker_died
            if outcome.worker_died and deaths_now < max_worker_deaths:
                pending.appendleft(outcome.job)  # next free worker takes it first
            _settle(outcome, videos, deaths_now, max_worker_deaths, run_no, emit)
            _save_record(record, record_path)
    finally:
        try:
            executor.close()
        finally:
            for v in videos.values():
                if v.get("status") == "running":
                    v["status"] = "pending"
            _save_record(record, record_path)
            sweep_stale_temps(staging_dir(out))  # folders of this host's workers killed during this run
    return record


def _save_record(record: dict[str, Any], path: Path) -> None:
    """Write ``run.json`` with its summary counts (atomically: a reader never sees half a record)."""
    videos: dict[str, dict[str, Any]] = record["videos"]
    done = [v for v in videos.values() if v.get("status") == "done"]
    record["summary"] = {
        "videos": len(videos),
        "done": len(done),
        "failed": sum(v.get("status") == "failed" for v in videos.values()),
        "pending": sum(v.get("status") not in ("done", "failed") for v in videos.values()),
        "frames": sum(int(v.get("frames", 0)) for v in done),
        "persons": sum(int(v.get("persons", 0)) for v in done),
    }
    record["updated"] = _now()
    write_text_atomic(path, json.dumps(record, indent=1) + "\n")


def _pending(
    jobs: Sequence[VideoJob],
    videos: dict[str, dict[str, Any]],
    out: Path,
    run_no: int,
    emit: Callable[[BatchEvent], None],
) -> deque[VideoJob]:
    """The jobs this run still has to do: a committed video is skipped (and recorded, when its
    recorder died before writing it down); a failed one is retried, keeping its earlier errors."""
    pending: deque[VideoJob] = deque()
    for job in jobs:
        prev = videos.get(job.name, {})
        if prev.get("source") not in (None, job.source):
            raise DataError(
                f"{out / RUN_RECORD}: {job.name} came from {prev['source']}, now from {job.source}: "
                "choose another -o folder"
            )
        committed = read_video_record(out / job.name)
        if committed is not None:
            if prev.get("status") != "done":
                videos[job.name] = {**prev, **committed, "run": run_no, "attempts": prev.get("attempts", 1)}
            emit(BatchEvent("skipped", job.name, videos[job.name]))
            continue
        errors = list(prev.get("errors", []))
        videos[job.name] = {"status": "pending", "source": job.source, "attempts": prev.get("attempts", 0)}
        if errors:
            videos[job.name]["errors"] = errors
        pending.append(job)
    return pending


def _settle(
    outcome: Outcome,
    videos: dict[str, dict[str, Any]],
    deaths: int,
    max_worker_deaths: int,
    run_no: int,
    emit: Callable[[BatchEvent], None],
) -> None:
    """Record how a video ended: done, failed, or (its worker died fewer than the limit) pending again."""
    name = outcome.job.name
    entry = videos[name]
    if outcome.worker_died:
        entry["worker_deaths"] = int(entry.get("worker_deaths", 0)) + 1
        if deaths < max_worker_deaths:
            entry["status"] = "pending"
            emit(BatchEvent("retry", name, entry, outcome.error or "worker died"))
            return
        outcome.error = f"its worker died {deaths} times ({outcome.error or 'no reason given'})"
    if outcome.entry is not None:
        videos[name] = {**entry, **outcome.entry, "run": run_no}
        videos[name].pop("error", None)
        emit(BatchEvent("done", name, videos[name]))
    else:
        entry.update(status="failed", error=outcome.error, run=run_no, worker=outcome.worker)
        entry["errors"] = [*entry.get("errors", []), outcome.error]
        emit(BatchEvent("failed", name, entry, outcome.error or ""))


def summarize(record: dict[str, Any], names: Iterable[str]) -> dict[str, int]:
    """Counts of this run's videos by status."""
    counts = {"done": 0, "failed": 0, "pending": 0}
    for n in names:
        status = record["videos"].get(n, {}).get("status", "pending")
        counts[status if status in counts else "pending"] += 1
    return counts
