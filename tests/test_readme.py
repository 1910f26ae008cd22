"""The README as a newcomer follows it: its Python snippets run, its commands' flags exist, and the
first tdmi-tiny command works on a fresh checkout (no ``out/`` folder yet)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import typer

from tdmi.cli import bench, build_engine, demo, eval, export, infer, serve, train
from tdmi.cli.common import run_app

README = Path(__file__).resolve().parents[1] / "README.md"
APPS: dict[str, typer.Typer] = {
    "tdmi-export": export.app,
    "tdmi-build-engine": build_engine.app,
    "tdmi-bench": bench.app,
    "tdmi-eval": eval.app,
    "tdmi-infer": infer.app,
    "tdmi-train": train.app,
    "tdmi-serve": serve.app,
    "tdmi-demo": demo.app,
}


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def _commands() -> list[list[str]]:
    """Every ``tdmi-*`` command line of the README's bash blocks, comments and markup stripped."""
    out = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():  # continuation lines are one command
            line = line.split("  #", 1)[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part.replace("[", " ").replace("]", " ").replace("|", " "))
                if words and words[0] in APPS:
                    out.append(words)
    return out


def test_readme_python_snippets_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    snippets = _blocks("python")
    assert snippets, "the README has no Python snippet"
    monkeypatch.chdir(tmp_path)
    for code in snippets:
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    assert "(1, 17, 32, 24) (1, 17, 2) (1, 17)" in capsys.readouterr().out


def test_readme_command_flags_exist(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    commands = _commands()
    assert len(commands) >= 15
    helps: dict[tuple[str, str], str] = {}
    for words in commands:
        prog, rest = words[0], words[1:]
        app = APPS[prog]
        sub = next((w for w in rest if not w.startswith("-")), "")
        names = {c.name for c in app.registered_commands if c.name}
        sub = sub if sub in names else ("build" if prog == "tdmi-build-engine" and rest else "")
        key = (prog, sub)
        if key not in helps:
            argv = [sub, "--help"] if sub else ["--help"]
            assert run_app(app, argv, prog_name=prog) == 0, (prog, argv)
            helps[key] = capsys.readouterr().out
        for flag in (w.split("=")[0] for w in rest if w.startswith("--")):
            assert re.search(rf"{re.escape(flag)}\b", helps[key]), f"{' '.join(words)}: no {flag} in --help"


def test_readme_first_tiny_command_on_a_fresh_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    line = "tdmi-bench --config tdmi-tiny --batch 1,4 --json out/bench.json"
    assert any(" ".join(words[:7]) == line for words in _commands())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TDMI_CACHE_DIR", str(tmp_path / "cache"))
    rc = run_app(bench.app, [*shlex.split(line)[1:], "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert report["settings"]["batches"] == [1, 4]
    assert (tmp_path / "out" / "bench.md").is_file() and (tmp_path / "out" / "bench.png").is_file()
