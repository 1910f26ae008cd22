"""CLI plumbing: library errors become one line and a non-zero exit; --verbose shows the traceback."""

from __future__ import annotations

import pytest
import typer

from tdmi.cli.common import run_app
from tdmi.errors import DataError

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
    assert run_app(app, ["--fail", "bug"]) == 2
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
