"""Issue 23's benchmark layout: ``tdmi-bench gpu`` is a typer sub-command, one machine probe feeds the
bench report and the GPU kit, and the library pieces the CLI now calls behave as the CLI did."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tdmi.cli import bench
from tdmi.cli.common import run_app
from tdmi.errors import UsageError


def test_gpu_is_a_registered_sub_command_and_bench_stays_the_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "gpu" in {c.name for c in bench.app.registered_commands}
    assert run_app(bench.app, ["--help"], prog_name="tdmi-bench") == 0
    out = capsys.readouterr().out
    assert "gpu" in out and "--backend" in out  # the benchmark's options on the bare command
    assert run_app(bench.app, ["gpu", "--help"], prog_name="tdmi-bench") == 0
    out = capsys.readouterr().out
    assert "tdmi-bench gpu" in out and "--sections" in out and "--worker" not in out


def test_gpu_sub_command_refuses_a_bad_device_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(bench.app, ["gpu", "--device", "tpu"], prog_name="tdmi-bench") == 2
    assert "--device" in capsys.readouterr().err


def test_kit_environment_and_bench_report_read_one_probe() -> None:
    from tdmi.gpukit.environment import section_environment
    from tdmi.gpukit.options import IMAGE_PACKAGES, Options
    from tdmi.gpukit.record import Recorder
    from tdmi.plugins.machine import host_info, machine_info, package_versions

    rec = Recorder(None, deadline=time.time() + 60)
    section_environment(Options(device="cpu"), rec)
    assert rec.data["host"] == host_info()
    assert rec.data["packages"] == package_versions((*IMAGE_PACKAGES, "tdmi-deploy"))
    assert rec.data["gpu"] == {"available": False, "reason": "needs a CUDA GPU (--device cpu)"}
    info = machine_info()
    assert info["cpu_cores"] == (host_info()["cpu_count"] or 0)
    assert info["versions"]["torch"] == rec.data["packages"]["torch"]


def test_bench_options_parse_the_cli_values_and_checks_name_the_option() -> None:
    from tdmi.benchmarks.options import BenchOptions, bench_options, check_options

    opts = bench_options(batch="1,4,1", engine=None, int8_op_types="Conv,Gemm", no_progress=True, iters=3)
    assert (opts.batches, opts.engines, opts.int8_op_types, opts.progress, opts.iters) == (
        [1, 4],
        [],
        ("Conv", "Gemm"),
        False,
        3,
    )
    check_options(opts)
    with pytest.raises(UsageError, match="--missing-frames"):
        check_options(BenchOptions(missing_frames="closest"))
    with pytest.raises(UsageError, match="--accuracy-clips"):
        check_options(BenchOptions(accuracy_clips=0))


def test_emit_json_prints_and_writes_the_same_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tdmi.benchmarks.output import emit_json

    emit_json({"cold_s": [1.5, 2.0]}, tmp_path / "r.json")
    printed = capsys.readouterr().out
    assert json.loads(printed) == {"cold_s": [1.5, 2.0]}
    assert (tmp_path / "r.json").read_text() == printed


def test_load_test_summary_lines_account_for_every_request() -> None:
    from tdmi.serve.load_test import LevelResult, LoadTestReport, summary_lines

    level = LevelResult("tdmi", 2, 10, 9, 1, 0, 1.0, 9.0, 9.0, 1.0, 2.0, 3.0, errors=["timeout"])
    report = LoadTestReport(
        "h:1", "http", "tdmi", [3, 3, 8, 8], 1, [level], {"checked": False, "note": "no local model"},
        {"checked": False}, {"sent": 10, "answered": 9, "failed": 1, "lost": 0}, {},
    )  # fmt: skip
    assert report.all_levels() == [level]
    assert summary_lines(report, report.all_levels()) == [
        "requests: 10 sent, 9 answered, 1 failed, 0 lost",
        "parity not checked: no local model",
        "error (tdmi x2): timeout",
    ]
