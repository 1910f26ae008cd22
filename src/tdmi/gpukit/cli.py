"""The kit's command line: ``python -m tdmi.gpukit`` and ``tdmi-bench gpu`` run the same typer command.

Self-contained (typer and rich are in the GPU image; the kit never imports :mod:`tdmi.cli`), and
cheap: the sections import torch in their worker processes, not here.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from tdmi.errors import TdmiError
from tdmi.gpukit.options import DEFAULT_TIME_LIMIT_S, SECTIONS, TITLES, Options

PROG = "python -m tdmi.gpukit"
SUMMARY = "GPU evidence in one command: what a CPU cannot show, measured on a bare, borrowed GPU machine."
DEVICES = ("cuda", "cpu")


def _one_of(values: tuple[str, ...], option: str) -> Callable[[str | None], str | None]:
    """A fixed-choice check as a callback, not a Literal type: the bare GPU image's typer may predate
    typer 0.19 (Literal options), and the kit must run there as it is."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in values:
            raise typer.BadParameter(f"{option} must be one of {', '.join(values)}, got {value!r}")
        return value

    return check


def _output(path: Path | None) -> Path | None:
    """A report path whose folder exists (the kit writes it after every section, never makes folders)."""
    if path is not None and not (path.parent if str(path.parent) else Path(".")).is_dir():
        raise typer.BadParameter(
            f"output folder {path.parent} does not exist: create it or choose another path"
        )
    return path


def _positive(value: float) -> float:
    if value <= 0:
        raise typer.BadParameter("--time-limit must be positive")
    return value


def gpu(
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON.", callback=_output)
    ] = None,
    md_out: Annotated[
        Path | None, typer.Option("--md", help="Write the report as Markdown.", callback=_output)
    ] = None,
    device: Annotated[
        str,
        typer.Option("--device", help="cuda or cpu (default cuda).", callback=_one_of(DEVICES, "--device")),
    ] = "cuda",
    quick: Annotated[
        bool, typer.Option("--quick", help="Toy sizes, few iterations (the CI dry run).")
    ] = False,
    sections: Annotated[
        str | None,
        typer.Option("--sections", help=f"Comma-separated subset (default all: {','.join(SECTIONS)})."),
    ] = None,
    time_limit: Annotated[
        float,
        typer.Option(
            "--time-limit",
            help=f"Global limit in seconds (default {DEFAULT_TIME_LIMIT_S:.0f}); "
            "sections past it are not run.",
            callback=_positive,
        ),
    ] = DEFAULT_TIME_LIMIT_S,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights and inputs.")] = 0,
    no_isolate: Annotated[
        bool, typer.Option("--no-isolate", help="Run sections in this process (debugging).")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Traceback on error.")] = False,
    worker: Annotated[
        str | None, typer.Option("--worker", hidden=True, callback=_one_of(SECTIONS, "--worker"))
    ] = None,
    worker_out: Annotated[Path | None, typer.Option("--worker-out", hidden=True)] = None,
    worker_deadline: Annotated[float | None, typer.Option("--worker-deadline", hidden=True)] = None,
) -> None:
    """GPU evidence in one command: environment, PTX kernel correctness and bandwidth, PyTorch
    latency, DCN forms and ONNX Runtime CPU, each section in its own time-guarded worker."""
    opts = Options(device=device, quick=quick, seed=seed)
    if worker:
        raise typer.Exit(_run_worker(worker, opts, worker_out, worker_deadline))
    from rich.console import Console

    from tdmi.gpukit.record import cell
    from tdmi.gpukit.runner import exit_code, run_kit

    console = Console(highlight=False, soft_wrap=True)  # one line per section, also in logs
    chosen = [s.strip() for s in sections.split(",") if s.strip()] if sections else None

    def show(name: str, s: dict[str, Any]) -> None:
        colour = {"ok": "green", "partial": "yellow", "skipped": "cyan"}.get(s["status"], "red")
        reason = f": {s.get('reason')}" if s.get("reason") else ""
        console.print(
            f"[{colour}]{s['status']:>8}[/] {s['title']} ({cell(s.get('seconds'))} s){reason}", markup=True
        )

    def started(name: str, timeout: float) -> None:
        console.print(f"[dim]{'running':>8} {TITLES[name]} (at most {timeout:.0f} s)[/]", markup=True)

    try:
        report = run_kit(
            opts,
            chosen,
            time_limit,
            json_out,
            md_out,
            isolate=not no_isolate,
            on_section=show,
            on_start=started,
        )
    except TdmiError as e:
        if verbose:
            traceback.print_exc()
        Console(stderr=True).print(f"error: {e}", markup=False)
        raise typer.Exit(1) from None
    for path in (json_out, md_out):
        if path is not None:
            console.print(f"wrote {path}", markup=False)
    raise typer.Exit(exit_code(report))


def _run_worker(name: str, opts: Options, out: Path | None, deadline: float | None) -> int:
    """``--worker NAME``: one section in this process, its result in ``out`` (see :mod:`.isolate`)."""
    from tdmi.gpukit.runner import run_section

    result = run_section(name, opts, out, deadline or time.time() + 60)
    if result["status"] == "failed" and "traceback" in result:
        print(result["traceback"], file=sys.stderr)
    return 0


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run the kit's command; the exit code (0: every selected section ran; 1: one did not; 2: usage)."""
    app = typer.Typer(add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})
    app.command(help=SUMMARY)(gpu)
    try:
        app(args=argv, prog_name=prog)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
