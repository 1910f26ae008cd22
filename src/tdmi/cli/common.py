"""Shared CLI plumbing: the conventions every ``tdmi-*`` command gets from ``run_app``.

- ``-h``/``--help`` and ``--version`` on every command and sub-command;
- exit codes: 0 success, 1 a tool error (bad input, missing file, failed check), 2 a usage error
  (unknown option, bad option value), 130/143 interrupted by SIGINT/SIGTERM;
- every error is one line naming the file, field or option (no traceback unless ``--verbose``);
- Python warnings are one ``warning:`` line each (no source lines), each message once;
- SIGINT/SIGTERM unwind the stack (so temp files and temp folders are removed by their ``finally``)
  and print "interrupted; nothing written";
- one temp root per run (``tdmi.utils.run_temp_root``), removed at the end; roots and artifact temp
  files orphaned by a killed run are swept by the next one;
- commands check every output location before any work with ``tdmi.utils.check_outputs``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from tdmi.errors import TdmiError, UsageError
from tdmi.utils import run_temp_root

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
console = Console(highlight=False)

VERBOSE_FLAGS = ("--verbose", "-v")
HELP_OPTION_NAMES = ["-h", "--help"]
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

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


_ABORT_OR_CTRL_C: tuple[type[BaseException], ...] = (*_ABORT, KeyboardInterrupt)


class Interrupted(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM.

    A ``BaseException`` that is not ``KeyboardInterrupt``: click turns the latter into an ``Abort``
    and a blank line, and ``except Exception`` blocks in the library must not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGINT/SIGTERM raise :class:`Interrupted`, so every ``finally`` (temp files) runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Python warnings as ``warning: message`` (no file/line/source echo), each message once."""
    seen: set[str] = set()

    def show(message: Warning | str, category: type[Warning], *_args: Any, **_kw: Any) -> None:
        text = " ".join(str(message).split())
        if text in seen:
            return
        seen.add(text)
        err_console.print(f"[yellow]warning:[/] {escape(text)}", markup=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _apply_conventions(app: typer.Typer) -> None:
    settings = dict(app.info.context_settings or {})
    settings.setdefault("help_option_names", HELP_OPTION_NAMES)
    app.info.context_settings = settings


def _wants_version(args: Sequence[str]) -> bool:
    head = list(args[: args.index("--")]) if "--" in args else list(args)
    return "--version" in head


def _oserror_line(e: OSError) -> str:
    what = e.strerror or str(e) or type(e).__name__
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    return f"{what}: {' -> '.join(names)}" if names else what


def run_app(app: typer.Typer, argv: Sequence[str] | None = None, prog_name: str | None = None) -> int:
    """Run ``app`` and turn every outcome into an exit code and at most one message line.

    Returns the exit code instead of exiting so tests can call it directly.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in VERBOSE_FLAGS for a in args)
    name = prog_name or app.info.name or os.path.basename(sys.argv[0] or "tdmi")
    if _wants_version(args):
        from tdmi import __version__

        console.print(f"{name} {__version__}", markup=False)
        return EXIT_OK
    _apply_conventions(app)

    def fail(message: str, code: int = EXIT_ERROR, label: str = "error") -> int:
        if verbose:
            traceback.print_exc()
        err_console.print(f"[bold red]{label}:[/] {escape(message)}", markup=True)
        return code

    try:
        with _signals_unwind(), _one_line_warnings(), run_temp_root():
            # Without standalone mode, typer returns (rather than raises) the code of ``typer.Exit``.
            rc = app(args=args, prog_name=name, standalone_mode=False)
    except _EXIT as e:
        return int(getattr(e, "exit_code", 0))
    except Interrupted as e:
        err_console.print("interrupted; nothing written")
        return 128 + e.signum
    except _ABORT_OR_CTRL_C:
        err_console.print("interrupted; nothing written")
        return 130
    except _USAGE as e:  # usage errors: typer/click already phrases them well
        show = getattr(e, "show", None)
        if callable(show):
            show(file=sys.stderr)
        else:
            err_console.print(str(e))
        return int(getattr(e, "exit_code", EXIT_USAGE)) or EXIT_USAGE
    except UsageError as e:
        return fail(f"{e} (see {name} --help)", EXIT_USAGE, "usage error")
    except TdmiError as e:
        return fail(str(e))
    except ModuleNotFoundError as e:  # an optional extra this install lacks: name it
        from tdmi.extras import missing_extra_message

        message = missing_extra_message(e.name, name)
        if message is None:
            return fail(
                f"{type(e).__name__}: {e} (re-run with --verbose for the traceback)", label="internal error"
            )
        return fail(message)
    except OSError as e:  # disk full, permissions, ...: name the path the system call was about
        return fail(_oserror_line(e))
    except Exception as e:  # an unexpected failure: still one line unless asked for more
        return fail(
            f"{type(e).__name__}: {e} (re-run with --verbose for the traceback)", label="internal error"
        )
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0


@contextlib.contextmanager
def options_of_config(**renames: str) -> Iterator[None]:
    """Build a config from the running command's options: its validation errors name the option.

    Configs (``TrainConfig``, ``ServeConfig``, ...) check their fields and name them in the message
    (``save_every must be >= 0``); here each field name is replaced, once for every command, by the
    option that set it (``--save-every``: the option of the parameter with the field's name, or of
    the parameter ``renames`` maps the field to), and the error becomes a usage error (exit 2).
    A message naming no option's field is left as it is.
    """
    import re

    from tdmi.errors import ConfigError

    try:
        yield
    except UsageError:
        raise
    except ConfigError as e:
        ctx = click_context()
        if ctx is None:
            raise
        options = {
            p.name: max(p.opts, key=len)
            for p in ctx.command.params
            if p.name and p.opts and p.opts[0][:1] == "-"
        }
        fields = {f: options[renames.get(f, f)] for f in {*options, *renames} if renames.get(f, f) in options}
        message, named = str(e), 0
        for field in sorted(fields, key=len, reverse=True):
            message, n = re.subn(rf"(?<![\w-]){re.escape(field)}(?!\w)", fields[field], message)
            named += n
        if not named:
            raise
        raise UsageError(message) from None


def click_context() -> Any:
    """The running command's click context (None outside a command, e.g. a library call)."""
    import importlib

    for name in ("typer._click.globals", "click"):  # typer >= 0.24 vendors click; older uses click's
        try:
            ctx = importlib.import_module(name).get_current_context(silent=True)
        except ImportError:
            continue
        if ctx is not None:
            return ctx
    return None


def preset_or_json(value: str | None) -> str | None:
    """``--config``: a preset name or a readable config ``.json``, checked by typer before any heavy
    import, so a bad value is a usage error (exit 2) naming the option."""
    if value is None:
        return value
    from tdmi.errors import ConfigError
    from tdmi.spec.config import resolve_config

    try:
        resolve_config(value)
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None
    return value


def main_for(app: typer.Typer, prog_name: str) -> None:
    sys.exit(run_app(app, prog_name=prog_name))


# The one --verbose flag of every command: library errors print one line unless it is given.
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks for errors.")]


def check_input_paths(paths: dict[str, Any], *, folders: bool = False) -> None:
    """Each given input (option name -> path, ``None``: not given) exists, before any heavy import.

    ``folders``: a folder is a valid input too (a frame folder, a PoseTrack root).
    """
    from pathlib import Path

    for option, value in paths.items():
        if value is None:
            continue
        p = Path(value)
        if not p.exists():
            raise TdmiError(f"{option} {p} does not exist")
        if not folders and p.is_dir():
            raise TdmiError(f"{option} {p} is a folder: give a file")


def progress_bar(unit: str, transient: bool = True) -> Any:
    """The one progress bar of the commands (on stderr, gone when done): description, bar, done/total,
    ``unit`` (a format over the task's ``fps`` field, e.g. ``"{task.fields[fps]:.1f} frames/s"``), ETA."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=err_console, transient=transient)
