"""CLI plumbing: library errors become one line and a non-zero exit; --verbose shows the traceback."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Annotated

import pytest
import typer

from tdmi import __version__
from tdmi.cli.common import run_app
from tdmi.errors import DataError, UsageError
from tdmi.utils import atomic_path

SRC = Path(__file__).resolve().parents[2] / "src"
app = typer.Typer()


@app.command()
def go(fail: str = "none", verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    if fail == "library":
        raise DataError("folder /x has no annotations: pass the PoseTrack root")
    if fail == "brackets":
        raise DataError("install it: pip install 'tdmi-deploy[trt]'")
    if fail == "exit":
        raise typer.Exit(4)
    if fail == "bug":
        raise ZeroDivisionError("division by zero")
    if fail == "usage":
        raise UsageError("--batch must be positive, got 0")
    if fail == "warn":
        for _ in range(3):
            warnings.warn("calibrating on smoke-test clips", UserWarning, stacklevel=1)
    if fail == "disk":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/out/tdmi.onnx")
    print("done")


def test_success_returns_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, []) == 0
    assert "done" in capsys.readouterr().out


def test_library_error_is_one_line_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, ["--fail", "library"]) == 1
    err = capsys.readouterr().err
    assert "error: folder /x has no annotations: pass the PoseTrack root" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_verbose_adds_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, ["--fail", "library", "--verbose"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_unexpected_error_is_still_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, ["--fail", "bug"]) == 1  # a tool error, not a usage error
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: division by zero" in err and "Traceback" not in err


def test_usage_error_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, ["--no-such-flag"]) == 2
    assert "no-such-flag" in capsys.readouterr().err


def test_brackets_in_messages_survive(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, ["--fail", "brackets"]) == 1
    assert "pip install 'tdmi-deploy[trt]'" in capsys.readouterr().err


def test_typer_exit_code_is_kept() -> None:
    assert run_app(app, ["--fail", "exit"]) == 4


multi = typer.Typer()


@multi.command()
def one(out: Annotated[Path, typer.Option("-o")]) -> None:
    """Write ``out`` and get SIGTERM half-way."""
    with atomic_path(out) as tmp:
        tmp.write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
        tmp.write_text("never")


@multi.command()
def two() -> None:
    """Second command."""


def test_short_help_and_version_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, ["-h"]) == 0
    assert "Usage" in capsys.readouterr().out
    assert run_app(multi, ["one", "-h"], prog_name="tdmi-x") == 0
    assert "Write" in capsys.readouterr().out
    assert run_app(multi, ["--version"], prog_name="tdmi-x") == 0
    assert capsys.readouterr().out.strip() == f"tdmi-x {__version__}"


def test_usage_error_from_the_library_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, ["--fail", "usage"]) == 2
    err = capsys.readouterr().err
    assert "--batch must be positive" in err and len(err.strip().splitlines()) == 1


def test_warnings_are_one_line_each_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, ["--fail", "warn"]) == 0
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["warning: calibrating on smoke-test clips"]


def test_oserror_names_the_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, ["--fail", "disk"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device: /out/tdmi.onnx" in err and "internal error" not in err


def test_sigterm_cleans_up_and_says_so(tmp_path: Path) -> None:
    """In a fresh process: a signal sent to the pytest process itself would land wherever earlier
    tests left native libraries (their threads, their signal stacks), which is not what a user's
    ``tdmi-*`` process looks like."""
    code = textwrap.dedent(
        """
        import signal, sys
        from pathlib import Path
        sys.path.insert(0, sys.argv[1])
        from test_cli_common import multi
        from tdmi.cli.common import run_app
        rc = run_app(multi, ["one", "-o", str(Path(sys.argv[2]) / "a.onnx")])
        print("RC", rc, "RESTORED", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert f"RC {128 + signal.SIGTERM} RESTORED True" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stderr.strip() == "interrupted; nothing written"
    assert list(tmp_path.iterdir()) == []
