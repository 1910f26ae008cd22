"""``tdmi-infer`` over many videos: the batch front end (progress, summary) over :mod:`tdmi.video.batch`."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape

from tdmi.cli.common import Interrupted, console, err_console
from tdmi.errors import DataError
from tdmi.video.batch import (
    MANIFEST_SUFFIXES,
    RUN_RECORD,
    VIDEO_SUFFIXES,
    BatchEvent,
    LocalExecutor,
    VideoOptions,
    collect_jobs,
    is_frames_folder,
    load_run_record,
    run_batch,
    summarize,
)


def is_batch(sources: Sequence[str], ray: str | None) -> bool:
    """Several inputs, a folder of videos, a list file, or ``--ray``: one folder per video and run.json."""
    if ray is not None or len(sources) > 1:
        return True
    p = Path(sources[0])
    if p.is_file():
        return p.suffix.lower() in MANIFEST_SUFFIXES
    if p.is_dir():  # a folder of videos or of frame folders; an empty one is today's "no images" error
        return not is_frames_folder(p) and any(
            (e.is_file() and e.suffix.lower() in VIDEO_SUFFIXES) or (e.is_dir() and is_frames_folder(e))
            for e in p.iterdir()
        )
    return False


def run_many(
    sources: Sequence[str],
    output: Path,
    loader: Callable[..., tuple[Any, Any]],
    model_settings: dict[str, Any],
    *,
    full_frame: bool,
    boxes: str | None,
    annotations: Path | None,
    track: bool,
    score_thr: float,
    box_policy: str,
    refine: str,
    fps: float | None,
    overlay: bool,
    ray: str | None,
    workers: int | None,
    gpus_per_worker: float,
    threads: int | None,
    allow_short: bool = False,
    detector: Path | None = None,
    detector_format: str | None = None,
    det_score: float = 0.3,
    det_nms: float = 0.45,
) -> dict[str, Any]:
    """Run every video of ``sources`` into ``output/<name>/`` (here, or on Ray) and print a summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if full_frame + (boxes is not None) + (detector is not None) != 1:
        raise DataError(
            "say where person boxes come from: --full-frame, --boxes FILE.json|FILE.csv|gt or --detector "
            "DET.onnx (one of them)"
        )
    options = VideoOptions(
        full_frame=full_frame,
        boxes=boxes,
        annotations=str(annotations.resolve()) if annotations is not None else None,
        tracker=track,
        score_thr=score_thr,
        box_policy=box_policy,
        refine=refine,
        overlay=overlay,
        fps=fps,
        allow_short=allow_short,
        detector=str(detector.resolve()) if detector is not None else None,
        detector_format=detector_format,
        det_score=det_score,
        det_nms=det_nms,
    )
    jobs = collect_jobs(sources, options)
    out = Path(output)
    for job in jobs:
        if (out / job.name).resolve() == Path(job.source) or Path(job.source).is_relative_to(
            (out / job.name).resolve()
        ):
            raise DataError(
                f"output {out / job.name} would overwrite the input {job.source}: choose another -o"
            )
    model = model_settings.get("model")
    if model is not None and Path(model).exists():
        model_settings = {**model_settings, "model": str(Path(model).resolve())}
    settings = {"model": model_settings, "options": options.to_dict()}
    if ray is not None:
        from tdmi.video.ray_runner import RayExecutor

        executor: Any = RayExecutor(
            functools.partial(loader, threads=threads or 1),
            out,
            options,
            workers=workers or 2,
            threads=threads or 1,
            gpus_per_worker=gpus_per_worker,
            address=ray,
        )
        where = f"{workers or 2} Ray worker(s)"
    else:
        executor = LocalExecutor(loader(threads=threads), out, options)
        where = "this process"
    names = [j.name for j in jobs]
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("videos, {task.fields[fps]:.1f} frames/s"),
        TimeRemainingColumn(),
    )
    frames = 0
    t0 = time.perf_counter()
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(f"pose tracking on {where}", total=len(jobs), fps=0.0)

        def on_event(e: BatchEvent) -> None:
            nonlocal frames
            if e.kind == "retry":
                bar.console.print(
                    f"[yellow]retry:[/] {escape(e.name)}: {escape(e.message)}; running it again"
                )
                return
            if e.kind == "done":
                frames += int(e.entry.get("frames", 0))
            if e.kind == "failed":
                bar.console.print(f"[bold red]failed:[/] {escape(e.name)}: {escape(e.message)}")
            elapsed = time.perf_counter() - t0
            bar.update(task, advance=1, fps=frames / elapsed if elapsed > 0 else 0.0)

        try:
            record = run_batch(jobs, out, executor, settings, on_event=on_event)
        except Interrupted:
            counts = summarize(load_record_quiet(out), names)
            err_console.print(
                f"{counts['done']} of {len(jobs)} videos are finished in {out}; "
                "run the same command again to do the rest"
            )
            raise
    wall = time.perf_counter() - t0
    counts = summarize(record, names)
    console.print(
        f"{counts['done']} of {len(jobs)} videos done, {counts['failed']} failed; {frames} frames in "
        f"{wall:.1f} s this run ({frames / wall if wall > 0 else 0.0:.1f} frames/s); wrote {out / RUN_RECORD}"
    )
    if counts["failed"]:
        raise DataError(
            f"{counts['failed']} video(s) failed (reasons in {out / RUN_RECORD}); run again to retry them"
        )
    return record


def load_record_quiet(out: Path) -> dict[str, Any]:
    try:
        return load_run_record(out) or {"videos": {}}
    except DataError:
        return {"videos": {}}
