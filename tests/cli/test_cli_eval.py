"""``tdmi-eval``: exit codes, one-line errors and the JSON report."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from tdmi.cli.common import run_app
from tdmi.cli.eval import app
from tdmi.data.posetrack import load_split
from tdmi.eval import write_predictions
from tdmi.spec.joints import NUM_JOINTS


@pytest.fixture()
def gt_dir(posetrack18: Path) -> Path:
    return posetrack18 / "annotations" / "val"


@pytest.fixture()
def perfect(posetrack18: Path, tmp_path: Path) -> Path:
    out = tmp_path / "pred"
    out.mkdir()
    for video in load_split(posetrack18):
        preds = {}
        for f in video.frames:
            preds[f.image_id] = [copy.deepcopy(p) for p in f.persons]
            for p in preds[f.image_id]:
                p.keypoint_scores = np.ones(NUM_JOINTS)
        write_predictions(out, video.name, [f.raw for f in video.frames], preds)
    return out


def test_perfect_predictions_print_table_and_write_json(
    gt_dir: Path, perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "metrics.json"
    assert run_app(app, [str(gt_dir), str(perfect), "--json", str(out), "--per-joint"]) == 0
    text = capsys.readouterr().out
    for name in ("Head", "Shou", "Elb", "Wri", "Hip", "Knee", "Ankl", "Total", "100.0", "14 GT people"):
        assert name in text
    report = json.loads(out.read_text())
    assert report["total"] == 100.0
    assert report["groups"]["Ankl"] == 100.0
    assert report["counts"]["gt_joints"]["right_knee"] == 10


def test_missing_gt_folder(perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, [str(tmp_path / "no_gt"), str(perfect)]) == 1
    err = capsys.readouterr().err
    assert "no_gt does not exist" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_prediction_folder_and_file(
    gt_dir: Path, perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_app(app, [str(gt_dir), str(tmp_path / "no_pred")]) == 1
    assert "no_pred does not exist" in capsys.readouterr().err
    (perfect / "009473_mpii_test.json").unlink()
    assert run_app(app, [str(gt_dir), str(perfect)]) == 1
    err = capsys.readouterr().err
    assert "009473_mpii_test.json" in err and "--missing empty" in err
    assert run_app(app, [str(gt_dir), str(perfect), "--missing", "empty"]) == 0
    assert "no predictions for 1 video(s)" in capsys.readouterr().out


def test_malformed_prediction_json(gt_dir: Path, perfect: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (perfect / "012834_mpii_test.json").write_text('{"images": [1, 2')
    assert run_app(app, [str(gt_dir), str(perfect)]) == 1
    err = capsys.readouterr().err
    assert "012834_mpii_test.json is not valid JSON" in err and "Traceback" not in err


def test_empty_gt_folder_and_bad_json_target(
    perfect: Path, tmp_path: Path, gt_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_app(app, [str(empty), str(perfect)]) == 1
    assert "holds no .json files" in capsys.readouterr().err
    target = tmp_path / "missing_dir" / "m.json"
    assert run_app(app, [str(gt_dir), str(perfect), "--json", str(target)]) == 0  # parent created
    assert json.loads(target.read_text())["total"] == 100.0
    capsys.readouterr()
    victim = next(perfect.glob("*.json"))
    before = victim.read_bytes()
    assert run_app(app, [str(gt_dir), str(perfect), "--json", str(victim)]) == 1
    assert "would overwrite the input PRED_DIR" in capsys.readouterr().err
    assert victim.read_bytes() == before


def test_usage_errors(gt_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, [str(gt_dir)]) == 2  # PRED_DIR missing
    assert "pred_dir" in capsys.readouterr().err.lower()
    assert run_app(app, [str(gt_dir), str(gt_dir), "--missing", "maybe"]) == 2
    assert "Invalid value for '--missing'" in capsys.readouterr().err


def test_verbose_shows_traceback(perfect: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(app, [str(tmp_path / "no_gt"), str(perfect), "--verbose"]) == 1
    assert "Traceback" in capsys.readouterr().err
