"""The first-run demo (issue 20, item 11): shipped synthetic tdmi-tiny weights follow a drawn figure.

The score threshold is checked from both sides: the shipped weights pass it and random weights of
the same architecture fail it, so the demo's claim that the skeleton follows the figure is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tdmi.cli.common import run_app
from tdmi.cli.demo import app
from tdmi.video.demo import (
    BANNER_HEIGHT,
    DEMO_BANNER,
    make_demo_video,
    run_demo,
    score_keypoints,
    shipped_weights,
)

FRAMES = 12
PASS_PCK = 0.8  # the shipped weights: see the assertion's message for the measured figure


def test_shipped_weights_are_small_and_say_they_are_synthetic() -> None:
    import onnx

    onnx_path, pt_path = shipped_weights("onnx"), shipped_weights("pt")
    assert onnx_path.stat().st_size < 4 << 20 and pt_path.stat().st_size < 4 << 20
    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    assert "tdmi-tiny" in json.dumps(meta)
    sheet = (onnx_path.parent / "WEIGHTS.md").read_text()
    assert "NOT pose weights" in sheet and "tdmi.train.synthetic" in sheet
    assert "SYNTHETIC" in " ".join(DEMO_BANNER) and "not pose weights" in " ".join(DEMO_BANNER)


def test_score_counts_only_joints_near_the_figure() -> None:
    truth = np.zeros((2, 17, 3))
    truth[..., 2] = 1
    truth[:, :, 1] = np.linspace(0, 100, 17)  # head top (joint 2) at ~12.5, ankles at ~93.75 / 100
    truth[:, 2, 1], truth[:, 15, 1], truth[:, 16, 1] = 0.0, 100.0, 100.0  # height 100: tolerance 10 px
    exact = score_keypoints(truth[..., :2].copy(), truth)
    assert exact["pck"] == 1.0 and exact["tolerance_px"] == pytest.approx(10.0)
    off = truth[..., :2] + np.array([0.0, 11.0])
    assert score_keypoints(off, truth)["pck"] == 0.0
    missing = truth[..., :2].copy()
    missing[1] = np.nan  # no pose on frame 1: its joints count as missed
    s = score_keypoints(missing, truth)
    assert s["pck"] == 0.5 and s["frames_with_pose"] == 1


def test_demo_video_has_the_banner_and_boxes(tmp_path: Path) -> None:
    video, boxes, truth = make_demo_video(tmp_path, frames=4)
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (360 + BANNER_HEIGHT, 640, 3)
    strip = frame[:BANNER_HEIGHT].astype(int)
    text = (strip[..., 2] > 150) & (strip[..., 0] < 150)  # the banner's yellow-orange letters
    assert text.sum() > 300
    rows = boxes.read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("1,1,")
    assert truth.shape == (4, 17, 3) and truth[..., 1].min() > BANNER_HEIGHT  # shifted below the banner


def test_demo_skeleton_follows_the_figure_with_the_shipped_onnx(tmp_path: Path) -> None:
    demo = run_demo(tmp_path / "out", frames=FRAMES)
    assert demo.model == shipped_weights("onnx")
    assert demo.outputs.result.backend.startswith("onnxruntime") or "onnx" in demo.outputs.result.backend
    s = demo.score
    assert s["frames_with_pose"] == FRAMES
    assert s["pck"] >= PASS_PCK, s
    # the figure really moves: its pelvis travels well beyond the tolerance over the clip
    travel = np.abs(demo.truth[-1, 11:13, 0].mean() - demo.truth[0, 11:13, 0].mean())
    assert travel > 3 * s["tolerance_px"], (travel, s)
    for p in (demo.outputs.json, demo.outputs.csv, demo.outputs.overlay, demo.outputs.sheet):
        assert p is not None and p.is_file() and p.stat().st_size > 0
    sheet = cv2.imread(str(demo.outputs.sheet))
    assert sheet is not None and sheet.shape[0] > 100


def test_random_weights_fail_the_same_check(tmp_path: Path) -> None:
    """Without this, a threshold the demo passes could be one that anything passes."""
    torch = pytest.importorskip("torch", reason="random weights are built with PyTorch")

    from tdmi.model import TDMI, get_preset
    from tdmi.runtime.torch_backend import TorchPredictor

    torch.manual_seed(0)
    net = TDMI(get_preset("tdmi-tiny"))
    demo = run_demo(tmp_path, frames=FRAMES, predictor=TorchPredictor(net, "cpu", source="random"))
    assert demo.score["pck"] < PASS_PCK / 2, demo.score


def test_cli_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    rc = run_app(app, ["-o", str(out), "--frames", "6"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "within" in captured.out and "median error" in captured.out
    assert "not pose weights" in captured.err.replace("\n", " ")
    assert (out / "demo_overlay.mp4").is_file() and (out / "demo_sheet.png").is_file()
    assert run_app(app, ["-o", str(out), "--frames", "2"]) == 2
    assert "--frames" in capsys.readouterr().err
