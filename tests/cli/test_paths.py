"""Output paths: never overwrite an input, checked before any work, option named; temp files swept."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tdmi.cli.bench import app as bench_app
from tdmi.cli.build_engine import run as build_engine_run
from tdmi.cli.common import run_app
from tdmi.cli.export import app as export_app
from tdmi.errors import TdmiError
from tdmi.utils import check_outputs, run_temp_root, sweep_stale_temps, write_text_atomic


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_output_may_not_be_an_input_even_through_a_symlink(tmp_path: Path) -> None:
    src = tmp_path / "a.onnx"
    src.write_text("model")
    link = tmp_path / "link.onnx"
    link.symlink_to(src)
    for out in (src, link, tmp_path / "." / "a.onnx"):
        with pytest.raises(TdmiError, match=r"--output .* would overwrite the input SRC"):
            check_outputs({"--output": out}, {"SRC": src}, force_option="--force")
    check_outputs({"--output": link}, {"SRC": src}, force=True)  # in place, asked for
    with pytest.raises(TdmiError, match=r"--markdown .* is the same file as --json"):
        check_outputs({"--json": tmp_path / "r.json", "--markdown": tmp_path / "r.json"})
    assert src.read_text() == "model"


def test_missing_parents_are_created_and_bad_folders_name_the_option(tmp_path: Path) -> None:
    out = tmp_path / "out" / "deeper" / "bench.json"
    check_outputs({"--json": out})
    assert out.parent.is_dir() and not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TdmiError, match=r"folder .*file for --plot"):
        check_outputs({"--plot": blocker / "p.png"})
    with pytest.raises(TdmiError, match=r"--json .* is a folder"):
        check_outputs({"--json": tmp_path})


def test_cli_refuses_to_overwrite_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"checkpoint bytes")
    onnx = tmp_path / "a.onnx"
    onnx.write_bytes(b"onnx bytes")
    assert run_app(export_app, ["onnx", "--checkpoint", str(ck), "-o", str(ck), "--no-verify"]) == 1
    assert "would overwrite the input --checkpoint" in capsys.readouterr().err
    assert run_app(export_app, ["fuse", str(onnx), "-o", str(onnx)]) == 1
    assert "pass --force" in capsys.readouterr().err
    assert build_engine_run([str(onnx), "--onnx-only", "-o", str(onnx)]) == 1
    assert "would overwrite the input ONNX_PATH" in capsys.readouterr().err
    assert ck.read_bytes() == b"checkpoint bytes" and onnx.read_bytes() == b"onnx bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "ck.pt"]


def test_bench_checks_report_paths_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    base = ["--config", "tdmi-tiny", "--cache-dir", str(cache), "--no-progress"]
    r = tmp_path / "r.json"
    assert run_app(bench_app, [*base, "--json", str(r), "--markdown", str(r)]) == 1
    assert "--markdown" in capsys.readouterr().err
    assert run_app(bench_app, [*base, "--json", str(r), "--plot", str(r)]) == 1
    blocker = tmp_path / "ro"
    blocker.write_text("")
    assert run_app(bench_app, [*base, "--json", str(blocker / "bench.json")]) == 1
    err = capsys.readouterr().err
    assert "for --json" in err and "--output" not in err
    assert not cache.exists()  # refused before the cache (and minutes of exporting) was touched


def test_orphaned_temp_files_are_swept_by_the_next_write(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getppid()
    orphan = tmp_path / f".model.onnx.tdmi-{dead}-abc123.tmp"
    busy = tmp_path / f".model.onnx.tdmi-{alive}-def456.tmp"
    foreign = tmp_path / ".model.onnx.xyz.tmp"
    for p in (orphan, busy, foreign):
        p.write_text("partial")
    write_text_atomic(tmp_path / "other.json", "{}")
    assert not orphan.exists()
    assert busy.exists() and foreign.exists()  # a live run's file, and not our naming pattern


def test_one_temp_root_per_run_removed_and_stale_roots_swept(tmp_path: Path) -> None:
    stale = tmp_path / f"tdmi-run-{_dead_pid()}-zzz"
    (stale / "tdmi-export-x").mkdir(parents=True)
    old = tempfile.tempdir
    tempfile.tempdir = str(tmp_path)
    try:
        with run_temp_root() as root:
            assert not stale.exists()
            made = Path(tempfile.mkdtemp(prefix="tdmi-bench-predictions-"))
            assert made.parent == root
        assert not root.exists()
    finally:
        tempfile.tempdir = old
    assert list(tmp_path.iterdir()) == []
    assert sweep_stale_temps(tmp_path / "missing") == []
