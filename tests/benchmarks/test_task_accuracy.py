"""Task accuracy against ground truth: PCK, OKS AP, paired drops, and `tdmi-bench --accuracy synthetic`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tdmi.benchmarks.latency import Runner
from tdmi.benchmarks.task_accuracy import run_synthetic_accuracy, speedups_at_batch1, task_cells
from tdmi.cli.bench import app
from tdmi.cli.common import run_app
from tdmi.data.targets import gaussian_heatmap
from tdmi.data.transforms import affine_transform_points, get_affine_transform
from tdmi.errors import DataError
from tdmi.eval.metrics import oks, oks_ap, pck_hits, task_scores
from tdmi.eval.synthetic import SyntheticSet, synthetic_set
from tdmi.model import get_preset

CFG = get_preset("tdmi-tiny")


def test_pck_counts_visible_joints_within_a_fraction_of_the_box() -> None:
    gt = np.zeros((1, 3, 2))
    pred = np.array([[[4.9, 0.0], [0.0, 5.1], [np.nan, 0.0]]])
    vis = np.array([[True, True, True]])
    box = np.array([[0.0, 0.0, 100.0, 50.0]])  # longer side 100 -> threshold 5 px
    assert pck_hits(pred, gt, vis, box).tolist() == [[True, False, False]]  # NaN is a miss
    assert pck_hits(pred, gt, np.array([[False, True, True]]), box).tolist() == [[False, False, False]]
    with pytest.raises(DataError, match="visibility"):
        pck_hits(pred, gt, vis[:, :2], box)


def test_oks_and_ap_on_hand_made_instances() -> None:
    gt = np.zeros((2, 17, 2))
    vis = np.ones((2, 17), bool)
    boxes = np.tile([0.0, 0.0, 100.0, 100.0], (2, 1))
    assert oks(gt, gt, vis, boxes) == pytest.approx([1.0, 1.0])
    far = gt + 50.0
    sim = oks(np.stack([gt[0], far[1]]), gt, vis, boxes)
    assert sim[0] == pytest.approx(1.0) and sim[1] < 0.01
    assert oks_ap(np.array([1.0, 1.0]), np.array([0.9, 0.8])) == pytest.approx(1.0)
    # the wrong instance ranked first costs precision at every recall point; ranked last, only recall
    high_wrong = oks_ap(sim, np.array([0.1, 0.9]))
    low_wrong = oks_ap(sim, np.array([0.9, 0.1]))
    assert low_wrong == pytest.approx(0.5, abs=0.01) and high_wrong < low_wrong


def test_task_scores_paired_drop() -> None:
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, (20, 17, 2))
    vis = np.ones((20, 17), bool)
    boxes = np.tile([0.0, 0.0, 100.0, 100.0], (20, 1))
    scores = np.ones((20, 17))
    worse = gt.copy()
    worse[:5, :, 0] += 20.0  # a quarter of the clips fail completely
    out = task_scores({"ref": (gt, scores), "same": (gt.copy(), scores), "worse": (worse, scores)},
                      gt, vis, boxes, reference="ref")  # fmt: skip
    assert out["ref"].pck == 1.0 and out["ref"].drop_pck == 0.0
    assert out["same"].drop_pck == 0.0 and out["same"].drop_pck_ci == (0.0, 0.0)
    assert out["worse"].pck == pytest.approx(0.75)
    assert out["worse"].drop_pck == pytest.approx(25.0)
    lo, hi = out["worse"].drop_pck_ci
    assert 0.0 < lo <= 25.0 <= hi
    assert out["worse"].failed_clips == 5 and out["ref"].failed_clips == 0
    assert out["worse"].oks_ap < out["ref"].oks_ap


class _Oracle:
    """Heatmaps peaked at the true joints of a SyntheticSet, optionally shifted by ``dx`` heatmap px."""

    def __init__(self, data: SyntheticSet, dx: float = 0.0) -> None:
        self.data, self.dx, self.i = data, dx, 0

    def predict(self, clips: np.ndarray) -> np.ndarray:
        h, w = CFG.heatmap_size
        out = np.zeros((clips.shape[0], CFG.num_joints, h, w), np.float32)
        for k in range(clips.shape[0]):
            idx = min(self.i + k, self.data.size - 1)
            trans = get_affine_transform(self.data.centers[idx], self.data.scales[idx], (w, h))
            xy = affine_transform_points(self.data.keypoints[idx], trans) + np.array([self.dx, 0.0])
            out[k], _ = gaussian_heatmap(xy, np.ones(CFG.num_joints), (h, w), 2.0)
        self.i += clips.shape[0]
        return out


def test_synthetic_accuracy_scores_backends_against_the_truth() -> None:
    data = synthetic_set(CFG, 12)
    assert data.visible[:, 3:5].sum() == 0  # ears are never labelled
    exact = Runner("ref", "fake", "fp32", "cpu", _Oracle(data))
    shifted = Runner("shifted", "fake", "int8", "cpu", _Oracle(data, dx=8.0))
    from tdmi.benchmarks.latency import RatioStats

    ratio = RatioStats(2.5, 2.4, 2.6, 5)
    res = run_synthetic_accuracy([exact, shifted], data, "ref", speedups={"shifted": ratio})
    ref, bad = res.rows
    assert ref.status == "reference" and ref.pck is not None and ref.pck > 95.0
    assert bad.pck is not None and bad.pck < ref.pck and bad.drop_pck == pytest.approx(ref.pck - bad.pck)
    assert (bad.speedup, bad.speedup_p25, bad.speedup_p75) == (2.5, 2.4, 2.6) and ref.drop_pck is None
    assert "2.50x (2.40-2.60)" in task_cells(bad)
    with pytest.raises(DataError, match="reference"):
        run_synthetic_accuracy([shifted], data, "ref")


def test_speedups_are_paired_per_round_ratios_over_ort_fp32() -> None:
    """The ratio of p50s could hide a noisy round; the median of same-round ratios with its IQR does not."""
    from tdmi.benchmarks.latency import Measurement

    def m(name: str, times: list[float]) -> Measurement:
        return Measurement(
            Runner(name, "fake", "fp32", "cpu", None), 1, times, round_times=dict(enumerate(times))
        )

    # round 2 is disturbed for both (a shared hiccup): pairing cancels it
    fp32, int8 = m("ort-fp32", [0.10, 0.10, 0.30, 0.10]), m("ort-int8", [0.04, 0.04, 0.12, 0.05])
    speed, base = speedups_at_batch1([m("torch", [0.2, 0.2, 0.6, 0.2]), fp32, int8], reference="torch")
    assert base == "ort-fp32" and speed["ort-fp32"].median == pytest.approx(1.0)
    assert speed["ort-int8"].median == pytest.approx(2.5) and speed["ort-int8"].p25 < 2.5
    assert speed["torch"].median == pytest.approx(0.5) and speed["ort-int8"].rounds == 4
    speed, base = speedups_at_batch1([m("torch", [0.2]), m("x", [0.1])], reference="torch")
    assert base == "torch" and speed["x"].median == pytest.approx(2.0)


@pytest.mark.filterwarnings("ignore:calibrating on the built-in sample clips")
def test_bench_accuracy_synthetic_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from tdmi.model import TDMI, save_checkpoint

    torch.manual_seed(5)
    ckpt = save_checkpoint(TDMI(CFG), tmp_path / "w.pt")
    out = tmp_path / "int8.json"
    args = ["--checkpoint", str(ckpt), "--variants", "ort-fp32,ort-int8", "--accuracy", "synthetic"]
    fast = ["--iters", "2", "--warmup", "0", "--calib-clips", "2", "--accuracy-clips", "6", "--no-progress"]
    rc = run_app(app, [*args, *fast, "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "task accuracy vs ground truth" in captured.out
    report = json.loads(out.read_text())
    rows = {r["name"]: r for r in report["task_accuracy"]}
    assert set(rows) == {"torch", "ort-fp32", "ort-int8"}
    assert rows["torch"]["status"] == "reference"
    assert rows["ort-fp32"]["drop_pck"] == pytest.approx(0.0, abs=1e-9)  # same numbers as PyTorch
    for name in ("ort-fp32", "ort-int8"):
        assert rows[name]["pck"] is not None and rows[name]["drop_pck_ci"] is not None
    assert rows["ort-int8"]["speedup"] > 0 and rows["ort-fp32"]["speedup"] == pytest.approx(1.0)
    assert rows["ort-int8"]["speedup_p25"] <= rows["ort-int8"]["speedup"] <= rows["ort-int8"]["speedup_p75"]
    assert report["task_dataset"]["clips"] == 6 and report["task_dataset"]["speedup_baseline"] == "ort-fp32"
    assert "PCK drop" in out.with_suffix(".md").read_text()
    rc = run_app(app, [*args, "--accuracy", "bogus", "--no-progress"])
    assert rc != 0 and "--accuracy" in capsys.readouterr().err
