"""Shared CLI plumbing: one readable line per library error, tracebacks only with --verbose."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

import typer
from rich.console import Console
from rich.markup import escape

from tdmi.errors import TdmiError

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
console = Console(highlight=False)

VERBOSE_FLAGS = ("--verbose", "-v")

# typer >= 0.24 vendors click and raises its own classes; older typer raises click's.
_EXIT: tuple[type[BaseException], ...] = (typer.Exit,)
_ABORT: tuple[type[BaseException], ...] = (typer.Abort,)
_USAGE: tuple[type[BaseException], ...] = (typer.TyperException,) if hasattr(typer, "TyperException") else ()
try:  # pragma: no cover - depends on the installed typer
    import click

    _EXIT += (click.exceptions.Exit,)
    _ABORT += (click.exceptions.Abort,)
    _USAGE += (click.ClickException,)
except ImportError:
    pass


def run_app(app: typer.Typer, argv: Sequence[str] | None = None, prog_name: str | None = None) -> int:
    """Run ``app`` and turn every failure into an exit code and one message line.

    Returns the exit code instead of exiting so tests can call it directly.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in VERBOSE_FLAGS for a in args)
    try:
        # Without standalone mode, typer returns (rather than raises) the code of ``typer.Exit``.
        rc = app(args=args, prog_name=prog_name, standalone_mode=False)
    except _EXIT as e:
        return int(getattr(e, "exit_code", 0))
    except _ABORT:
        err_console.print("aborted")
        return 130
    except _USAGE as e:  # usage errors: typer/click already phrases them well
        show = getattr(e, "show", None)
        if callable(show):
            show(file=sys.stderr)
        else:
            err_console.print(str(e))
        return int(getattr(e, "exit_code", 2)) or 2
    except TdmiError as e:
        if verbose:
            traceback.print_exc()
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", markup=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as e:  # an unexpected failure: still one line unless asked for more
        if verbose:
            traceback.print_exc()
        err_console.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {escape(str(e))} "
            "(re-run with --verbose for the traceback)",
            markup=True,
        )
        return 2
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0


def main_for(app: typer.Typer, prog_name: str) -> None:
    sys.exit(run_app(app, prog_name=prog_name))


VerboseOption = typer.Option(False, "--verbose", "-v", help="Show tracebacks for errors.")
