"""``tdmi-infer`` over many videos: the batch front end (progress, summary) over :mod:`tdmi.video.batch`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape

from tdmi.cli.common import Interrupted, console, err_console, progress_bar
from tdmi.errors import DataError
from tdmi.video.batch import (
    MANIFEST_SUFFIXES,
    RUN_RECORD,
    VIDEO_SUFFIXES,
    BatchEvent,
    VideoOptions,
    check_job_outputs,
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
    options: VideoOptions,
    ray: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run every video of ``sources`` into ``output/<name>/`` (here, or on Ray) and print a summary."""
    from tdmi.video.ray_runner import make_executor

    options.check()
    options = options.resolved()
    jobs = collect_jobs(sources, options)
    out = Path(output)
    check_job_outputs(jobs, out)
    model = model_settings.get("model")
    if model is not None and Path(model).exists():
        model_settings = {**model_settings, "model": str(Path(model).resolve())}
    settings = {"model": model_settings, "options": options.to_dict()}
    executor, where = make_executor(loader, out, options, ray, workers, gpus_per_worker, threads)
    names = [j.name for j in jobs]
    frames = 0
    t0 = time.perf_counter()
    with progress_bar("videos, {task.fields[fps]:.1f} frames/s") as bar:
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
