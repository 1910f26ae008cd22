"""The default bench job's memory (issue 20): builds in child processes, grouped calibration probes,
and the peak RSS in the report."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from tdmi.benchmarks.memory import MemoryLedger, peak_rss_mib, run_in_child
from tdmi.errors import ExportError


def _pid_and_peak() -> tuple[int, float]:
    return os.getpid(), peak_rss_mib()


def _fail() -> None:
    raise ExportError("no INT8 here: why")


def test_run_in_child_runs_elsewhere_and_records_its_peak() -> None:
    ledger = MemoryLedger()
    pid, peak = run_in_child("probe", ledger, _pid_and_peak)
    assert pid != os.getpid() and peak > 0
    [child] = ledger.children
    assert child.what == "probe" and child.peak_rss_mib >= peak and child.parent_rss_mib > 0
    data = ledger.to_dict()
    assert data["peak_rss_mib"] >= data["self_peak_rss_mib"] > 0
    assert data["peak_rss_mib"] >= child.parent_rss_mib + child.peak_rss_mib - 0.1
    assert data["children"][0]["what"] == "probe"


def test_run_in_child_reraises_the_childs_error() -> None:
    with pytest.raises(ExportError, match="no INT8 here: why"):
        run_in_child("fails", MemoryLedger(), _fail)


def test_check_sessions_run_without_the_arena(tiny_onnx_dynamic: Path) -> None:
    from tdmi.export.ort_ops import make_session

    model = onnx.load(str(tiny_onnx_dynamic))
    assert make_session(model, arena=False).get_session_options().enable_cpu_mem_arena is False
    assert make_session(model).get_session_options().enable_cpu_mem_arena is True  # timed sessions keep it


def test_calibration_probes_in_groups_give_the_same_statistics(tiny_onnx_dynamic: Path) -> None:
    """Probing the activations a group at a time bounds memory and changes no statistic."""
    from tdmi.export import build_calibration_set
    from tdmi.export.int8_recipes import activation_infos, collect_stats, probe_groups

    model = onnx.load(str(tiny_onnx_dynamic))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        clips = build_calibration_set("tdmi-tiny", None, num_clips=2).clips
    budget = 256 * 1024
    groups = probe_groups(activation_infos(model), 1, budget)
    assert len(groups) > 3  # the small budget really splits the probe
    whole = collect_stats(model, clips, 1)
    grouped = collect_stats(model, clips, 1, budget=budget)
    assert list(grouped.minimum) == list(whole.minimum)  # same tensors, same order
    for name in whole.minimum:
        np.testing.assert_allclose(grouped.minimum[name], whole.minimum[name], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(grouped.maximum[name], whole.maximum[name], rtol=1e-5, atol=1e-7)
    assert set(grouped.hist) == set(whole.hist)
    for name, h in whole.hist.items():
        assert abs(int(grouped.hist[name].sum()) - int(h.sum())) == 0  # every value counted once
