"""Shared CLI plumbing: one readable line per library error, tracebacks only with --verbose."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

import click
import typer
from rich.console import Console

from tdmi.errors import TdmiError

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
console = Console(highlight=False)

VERBOSE_FLAGS = ("--verbose", "-v")


def run_app(app: typer.Typer, argv: Sequence[str] | None = None, prog_name: str | None = None) -> int:
    """Run ``app`` and turn every failure into an exit code and one message line.

    Returns the exit code instead of exiting so tests can call it directly.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in VERBOSE_FLAGS for a in args)
    try:
        app(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except click.ClickException as e:  # usage errors: typer/click already phrases them well
        e.show(file=sys.stderr)
        return int(e.exit_code) or 2
    except TdmiError as e:
        if verbose:
            traceback.print_exc()
        err_console.print(f"[bold red]error:[/] {e}", markup=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as e:  # an unexpected failure: still one line unless asked for more
        if verbose:
            traceback.print_exc()
        err_console.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {e} (re-run with --verbose for the traceback)",
            markup=True,
        )
        return 2
    return 0


def main_for(app: typer.Typer, prog_name: str) -> None:
    sys.exit(run_app(app, prog_name=prog_name))


VerboseOption = typer.Option(False, "--verbose", "-v", help="Show tracebacks for errors.")
