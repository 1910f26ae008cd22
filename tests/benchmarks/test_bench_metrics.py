"""Benchmark arithmetic and harness logic on hand-made numbers and fake predictors (no timing asserts)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tdmi.benchmarks.accuracy import load_posetrack, run_posetrack
from tdmi.benchmarks.latency import (
    LoadProbe,
    Measurement,
    Runner,
    latency_stats,
    measure,
    paired_ratio,
    percentile,
)
from tdmi.benchmarks.report import NONFINITE_FLAG, BenchReport, accuracy_rows, latency_rows
from tdmi.benchmarks.report_markdown import to_markdown, write_report
from tdmi.benchmarks.variants import parse_backends, parse_batches
from tdmi.data.annotations import load_annotation_file
from tdmi.data.targets import render_gaussian
from tdmi.errors import ConfigError, DataError
from tdmi.eval.metrics import coords_agreement, heatmap_coords, heatmap_error, keypoint_agreement
from tdmi.model import get_preset
from tdmi.plugins.machine import cpu_int8_isa

TINY = get_preset("tdmi-tiny")
HM_H, HM_W = TINY.heatmap_size


# ------------------------------------------------------------------------------------------ numbers


def test_percentile_hand_numbers() -> None:
    xs = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(xs, 0) == 1.0
    assert percentile(xs, 100) == 4.0
    assert percentile(xs, 50) == pytest.approx(2.5)  # rank 1.5
    assert percentile(xs, 90) == pytest.approx(3.7)  # rank 2.7
    assert percentile(xs, 99) == pytest.approx(3.97)  # rank 2.97
    assert percentile([7.0], 99) == 7.0
    rng = np.random.default_rng(1)
    vals = rng.exponential(size=101)
    for q in (50, 90, 99):
        assert percentile(vals, q) == pytest.approx(float(np.percentile(vals, q)))
    with pytest.raises(DataError):
        percentile([], 50)
    with pytest.raises(DataError):
        percentile([1.0], 101)


def test_latency_stats_hand_numbers() -> None:
    s = latency_stats([0.1, 0.2, 0.3, 0.4], batch=2)
    assert s.mean_ms == pytest.approx(250.0)
    assert s.p50_ms == pytest.approx(250.0)
    assert s.throughput == pytest.approx(8.0)  # 2 clips / 0.25 s
    assert s.iters == 4
    with pytest.raises(DataError):
        latency_stats([], batch=1)


def test_heatmap_error_hand_numbers() -> None:
    ref = np.zeros((1, 2, 3, 3), np.float32)
    ref[0, 0, 1, 1] = 2.0
    out = ref.copy()
    out[0, 1, 0, 0] = -0.5
    assert heatmap_error(ref, out) == pytest.approx((0.5, 0.25))
    assert heatmap_error(ref, ref) == (0.0, 0.0)
    bad = out.copy()
    bad[0, 0, 2, 2] = np.nan
    abs_err, rel_err = heatmap_error(ref, bad)
    assert math.isnan(abs_err) and math.isnan(rel_err)
    with pytest.raises(DataError):
        heatmap_error(ref, ref[:, :1])


def test_coords_agreement_hand_numbers() -> None:
    ref = np.array([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])
    out = ref + np.array([[[0.0, 0.0], [0.05, 0.0], [0.0, 0.1], [0.3, 0.4]]])
    agree, max_dev = coords_agreement(ref, out, tol=0.1)
    assert agree == pytest.approx(0.75)  # 0.1 exactly is within
    assert max_dev == pytest.approx(0.5)
    out[0, 0] = np.nan
    agree, max_dev = coords_agreement(ref, out, tol=0.1)
    assert agree == pytest.approx(0.5)
    assert math.isinf(max_dev)


def _peaks(points: np.ndarray) -> np.ndarray:
    """Heatmaps [N, J, h, w] with a Gaussian at each (x, y) of ``points`` [N, J, 2]."""
    n, j, _ = points.shape
    hm = np.zeros((n, j, HM_H, HM_W), np.float32)
    for a in range(n):
        for b in range(j):
            hm[a, b] = render_gaussian(points[a, b], (HM_H, HM_W), sigma=2.0)
    return hm


def test_heatmap_coords_and_keypoint_agreement() -> None:
    pts = np.array([[[10.0, 12.0], [5.0, 20.0], [15.0, 8.0]]])
    ref = _peaks(pts)
    coords = heatmap_coords(ref)
    assert np.abs(coords - pts).max() <= 0.25  # argmax + quarter-pixel step, in heatmap pixels
    assert keypoint_agreement(ref, ref) == (1.0, 0.0)
    moved = pts.copy()
    moved[0, 1, 0] += 1.0  # one joint one pixel to the right
    agree, max_dev = keypoint_agreement(ref, _peaks(moved))
    assert agree == pytest.approx(2 / 3)
    assert max_dev == pytest.approx(1.0)
    nan = ref.copy()
    nan[0, 2, 0, 0] = np.nan
    agree, max_dev = keypoint_agreement(ref, nan)
    assert agree == pytest.approx(2 / 3) and math.isinf(max_dev)


def test_parse_lists() -> None:
    assert parse_batches("1, 4,1") == [1, 4]
    assert parse_backends(["torch,ort", "onnxruntime", "tensorrt"]) == ["torch", "ort-fp32", "trt"]
    for bad in ("0", "a", ","):
        with pytest.raises(ConfigError):
            parse_batches(bad)
    with pytest.raises(ConfigError, match="unknown backend 'tflite'"):
        parse_backends(["torch,tflite"])


# ------------------------------------------------------------------------------------------ fakes


class FakePredictor:
    """Heatmaps that depend on the clip (a peak placed from its mean), optionally with a NaN or an error."""

    def __init__(self, nan: bool = False, shift: float = 0.0, fail: bool = False) -> None:
        self.nan, self.shift, self.fail = nan, shift, fail
        self.calls: list[int] = []
        self.log: list[str] | None = None
        self.name = ""

    def predict(self, clips: np.ndarray) -> np.ndarray:
        self.calls.append(int(clips.shape[0]))
        if self.log is not None:
            self.log.append(self.name)
        if self.fail:
            raise RuntimeError("device lost\nsecond line")
        n = clips.shape[0]
        pts = np.zeros((n, TINY.num_joints, 2))
        for i in range(n):
            base = 8 + (abs(float(clips[i].mean())) * 100) % 8
            pts[i, :, 0] = base + np.arange(TINY.num_joints) % 5 + self.shift
            pts[i, :, 1] = base + np.arange(TINY.num_joints) % 7
        hm = _peaks(pts)
        if self.nan:
            hm[0, 3, 2, 2] = np.nan
        return hm


def _runner(name: str, pred: FakePredictor, check_only: bool = False) -> Runner:
    pred.name = name
    return Runner(name, "fake", "fp32", "cpu", pred, check_only=check_only)


def _clips(n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    return rng.normal(size=(n, TINY.num_frames, 3, *TINY.input_size)).astype(np.float32)


def _report(rows: Any, acc: Any = None) -> BenchReport:
    return BenchReport(
        machine={"cpu": "test", "cpu_cores": 1, "versions": {}},
        config=TINY.to_dict(),
        weights="fake",
        random_weights=False,
        reference="ref",
        settings={"iters": 3, "warmup": 1, "input": "fake"},
        latency=rows,
        accuracy=acc,
    )


def test_header_says_whether_the_cpu_has_vnni() -> None:
    """INT8 speed-ups differ several-fold between AVX2 and VNNI CPUs: the report must say which ran."""
    from tdmi.benchmarks.report_markdown import header_lines

    zen3 = "processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n"
    zen4 = "flags\t: fpu avx avx2 avx512f avx512_vnni avx512_bf16\n"
    assert cpu_int8_isa(zen3) == ["avx2"]
    assert cpu_int8_isa(zen4) == ["avx2", "avx512f", "avx512_vnni"]
    assert cpu_int8_isa("model name : Apple M3\n") is None
    report = _report([])
    report.machine["cpu_int8_isa"] = ["avx2"]
    assert "INT8 ISA: avx2 (no VNNI" in header_lines(report)[1]
    report.machine["cpu_int8_isa"] = ["avx2", "avx512f", "avx512_vnni"]
    line = header_lines(report)[1]
    assert "INT8 ISA: avx2, avx512f, avx512_vnni" in line and "no VNNI" not in line
    report.machine.pop("cpu_int8_isa")
    assert "INT8 ISA" not in header_lines(report)[1]  # reports written before the field: no claim


def test_measure_interleaves_and_counts_calls() -> None:
    log: list[str] = []
    preds = {n: FakePredictor() for n in ("ref", "a", "b", "check")}
    for p in preds.values():
        p.log = log
    runners = [_runner(n, p, check_only=(n == "check")) for n, p in preds.items()]
    ms = measure(runners, {1: _clips(1), 2: _clips(2)}, iters=3, warmup=1)
    assert [len(m.times_s) for m in ms] == [3, 3, 3, 0] * 2
    assert preds["ref"].calls == [1] * 4 + [2] * 4  # warm-up + timed, per batch
    assert preds["check"].calls == [1, 2]  # once per batch, for its output only
    # batch 1: the check once, one warm-up round, then rounds running every backend once each
    assert log[0] == "check" and log[1:4] == ["ref", "a", "b"]
    rounds = [log[4 + 3 * i : 7 + 3 * i] for i in range(3)]
    assert all(sorted(r) == ["a", "b", "ref"] for r in rounds)
    assert all(sorted(m.round_times) == [0, 1, 2] for m in ms if not m.runner.check_only)


def test_round_order_is_shuffled_not_fixed() -> None:
    log: list[str] = []
    preds = {n: FakePredictor() for n in ("ref", "a", "b")}
    for p in preds.values():
        p.log = log
    measure([_runner(n, p) for n, p in preds.items()], {1: _clips(1)}, iters=12, warmup=0)
    orders = {tuple(log[3 * i : 3 * i + 3]) for i in range(12)}
    assert len(orders) >= 3  # a fixed or rotating order would give 1 or 3 in a set order
    firsts = {o[0] for o in orders}
    assert firsts == {"ref", "a", "b"}


def _timed(name: str, ms: list[float]) -> Measurement:
    m = Measurement(_runner(name, FakePredictor()), 1, times_s=[t / 1000 for t in ms])
    m.round_times = {i: t / 1000 for i, t in enumerate(ms)}
    m.output = np.zeros((1, TINY.num_joints, HM_H, HM_W), np.float32)
    return m


def test_speedup_is_the_median_of_paired_ratios() -> None:
    # The reference was slowed by another process in rounds 2-4; so was the other backend in 3-4.
    ref = _timed("ref", [10, 10, 200, 200, 200])
    fast = _timed("fast", [1, 1, 1, 20, 20])
    ratio = paired_ratio(ref, fast)
    assert ratio is not None and ratio.median == 10.0 and ratio.rounds == 5
    assert (ratio.p25, ratio.p75) == (10.0, 10.0) and not ratio.noisy
    # A ratio of p50s would say 200x here.
    assert ref.stats is not None and fast.stats is not None
    assert ref.stats.p50_ms / fast.stats.p50_ms == pytest.approx(200.0)
    rows = {r.name: r for r in latency_rows([ref, fast], reference="ref", load=0.05)}
    assert rows["fast"].speedup == 10.0 and rows["fast"].noisy == "" and "noisy" not in rows["fast"].flags
    md = to_markdown(_report(list(rows.values())))
    assert "10.00x (10.00-10.00)" in md


def test_wide_spread_or_a_busy_machine_flags_the_row_noisy() -> None:
    ref = _timed("ref", [10, 10, 10, 10, 10])
    jumpy = _timed("jumpy", [1, 5, 1, 5, 2])
    rows = {r.name: r for r in latency_rows([ref, jumpy], reference="ref", load=0.0)}
    assert "ratio IQR" in rows["jumpy"].noisy and rows["jumpy"].flags.startswith("noisy:")
    assert rows["ref"].noisy == ""
    steady = _timed("steady", [2, 2, 2, 2, 2])
    rows = {r.name: r for r in latency_rows([ref, steady], reference="ref", load=0.9)}
    assert "other processes used 90% of the CPUs" in rows["steady"].noisy
    assert "90%" in rows["ref"].noisy
    few = latency_rows([_timed("ref", [10, 10]), _timed("f", [1, 1])], reference="ref")
    assert "only 2 paired rounds" in few[1].noisy


def test_load_probe_measures_other_processes_share() -> None:
    with LoadProbe() as probe:
        sum(range(200_000))
    if Path("/proc/stat").is_file():
        assert probe.others is not None and 0.0 <= probe.others <= 1.0


def test_nan_output_is_flagged_and_failures_are_rows() -> None:
    runners = [
        _runner("ref", FakePredictor()),
        _runner("same", FakePredictor()),
        _runner("shifted", FakePredictor(shift=1.0)),
        _runner("nan", FakePredictor(nan=True)),
        _runner("broken", FakePredictor(fail=True)),
    ]
    rows = latency_rows(measure(runners, {2: _clips(2)}, iters=2, warmup=0), reference="ref")
    by = {r.name: r for r in rows}
    assert by["ref"].status == "reference" and by["ref"].speedup == 1.0
    assert by["same"].kp_agreement == 1.0 and by["same"].hm_max_abs == 0.0
    assert by["shifted"].kp_agreement == 0.0 and by["shifted"].kp_max_dev == pytest.approx(1.0)
    assert by["nan"].nonfinite == 1 and by["nan"].flags.startswith(NONFINITE_FLAG)
    assert math.isnan(by["nan"].hm_max_abs)
    assert by["nan"].kp_agreement == pytest.approx(1 - 1 / (2 * TINY.num_joints))
    assert by["broken"].status == "failed" and "RuntimeError: device lost" in by["broken"].note
    assert "second line" not in by["broken"].note
    assert all(by[n].nonfinite == 0 for n in ("ref", "same", "shifted"))
    md = to_markdown(_report(rows))
    nan_line = next(line for line in md.splitlines() if line.startswith("| nan "))
    assert NONFINITE_FLAG in nan_line
    same_line = next(line for line in md.splitlines() if line.startswith("| same "))
    assert NONFINITE_FLAG not in same_line


def test_harness_flags_nan_backend_on_fixture(posetrack18: Path, tmp_path: Path) -> None:
    data = load_posetrack(posetrack18, "val", missing="nearest")
    runners = [_runner("ref", FakePredictor()), _runner("nan", FakePredictor(nan=True))]
    results = run_posetrack(runners, data, TINY, tmp_path / "preds", reference="ref", batch_size=4)
    rows = {r.name: r for r in accuracy_rows(results, "ref")}
    assert rows["ref"].groups is not None and set(rows["ref"].groups) >= {"Head", "Ankl", "Total"}
    assert rows["ref"].delta_total == 0.0
    assert rows["nan"].status == "flagged" and rows["nan"].groups is None
    assert rows["nan"].nonfinite > 0 and rows["nan"].flags == NONFINITE_FLAG
    assert not (tmp_path / "preds" / "nan").exists()  # garbage keypoints are never written
    assert sorted(p.name for p in (tmp_path / "preds" / "ref").iterdir()) == [
        "003418_mpii_test.json",
        "009473_mpii_test.json",
        "012834_mpii_test.json",
    ]
    report = _report([], acc=list(rows.values()))
    report.dataset = data.describe()
    paths = write_report(report, tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png")
    assert [p.exists() for p in paths] == [True, True, True]
    assert NONFINITE_FLAG in (tmp_path / "r.md").read_text()


def test_merged_annotation_file_scores_like_per_video_files(posetrack18: Path, tmp_path: Path) -> None:
    """A merged GT file is scored frame by frame; it must agree with the per-video-file path."""
    per_video = load_posetrack(posetrack18, "val", missing="nearest")
    merged = load_posetrack(posetrack18 / "annotations" / "test_posetrack18_val.json", missing="nearest")
    assert len(merged.samples) == len(per_video.samples) == 14
    a = run_posetrack([_runner("ref", FakePredictor())], per_video, TINY, tmp_path / "a", "ref")[0]
    b = run_posetrack([_runner("ref", FakePredictor())], merged, TINY, tmp_path / "b", "ref")[0]
    assert a.result is not None and b.result is not None
    assert a.result.counts["gt_persons"] == b.result.counts["gt_persons"] == 14
    assert b.result.ap == pytest.approx(a.result.ap, nan_ok=True)
    for f in (tmp_path / "b" / "ref").iterdir():
        assert load_annotation_file(f)  # valid PoseTrack JSON


def test_posetrack_bad_inputs(tmp_path: Path, posetrack18: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_posetrack(tmp_path / "nope")
    with pytest.raises(DataError, match=r"no \.json"):
        load_posetrack(tmp_path)
    with pytest.raises(DataError, match="detections JSON"):
        load_posetrack(posetrack18, boxes=str(tmp_path / "dets.json"))
    dets = load_posetrack(
        posetrack18, boxes=str(posetrack18 / "annotations" / "test_posetrack18_human_detections.json")
    )
    assert len(dets.samples) == 119 and all(s.person is None for s in dets.samples)


def test_max_samples_keeps_whole_frames_and_scores_only_them(posetrack18: Path, tmp_path: Path) -> None:
    full = load_posetrack(posetrack18, "val", missing="nearest")
    per_frame: dict[int, int] = {}
    for s in full.samples:
        per_frame[s.frame.image_id] = per_frame.get(s.frame.image_id, 0) + 1
    first, second = list(per_frame)[:2]
    assert per_frame[first] == 1 and per_frame[second] == 2  # 003418 (1 person), then 009473 (2)
    cut = load_posetrack(posetrack18, "val", missing="nearest", max_samples=2)
    assert len(cut.samples) == 3 and cut.subset == {first, second}  # the second frame is not split
    (acc,) = run_posetrack([_runner("ref", FakePredictor())], cut, TINY, tmp_path, "ref")
    assert acc.result is not None
    assert acc.result.counts["frames"] == 2 and acc.result.counts["gt_persons"] == 3
    assert len(list((tmp_path / "ref").iterdir())) == 3  # every video still gets its file
    with pytest.raises(DataError, match="positive"):
        load_posetrack(posetrack18, "val", max_samples=0)
