"""Synthetic-clip training: a short run must give lower loss and more peaked heatmaps, and round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tdmi.benchmarks import synthetic_weights as sw
from tdmi.data.sample import sample_clips
from tdmi.model import TDMI, get_preset, load_checkpoint

CFG = get_preset("tdmi-tiny")


@pytest.fixture(scope="module")
def trained() -> tuple[TDMI, list[float]]:
    return sw.train_on_synthetic("tdmi-tiny", steps=60, batch=4, lr=2e-3, clips_pool=32, progress=False)


def _peak(model: TDMI, clips: np.ndarray) -> float:
    with torch.no_grad():
        hm = model.eval()(torch.from_numpy(clips))
    return float(hm.flatten(2).amax(dim=2).mean())


def test_targets_peak_at_the_known_joints() -> None:
    _, infos = sample_clips(2, CFG.input_size, CFG.num_frames, seed=3)
    targets, weights = sw.heatmap_targets(infos, CFG)
    assert targets.shape == (2, CFG.num_joints, *CFG.heatmap_size)
    assert weights.shape == (2, CFG.num_joints, 1)
    truth = sw._joints_in_heatmap(infos, CFG)
    for n in range(2):
        for j in np.flatnonzero(weights[n, :, 0] > 0):
            y, x = np.unravel_index(np.argmax(targets[n, j]), targets[n, j].shape)
            assert abs(x - truth[n, j, 0]) <= 0.5 + 1e-6 and abs(y - truth[n, j, 1]) <= 0.5 + 1e-6
            assert targets[n, j].max() == pytest.approx(1.0)
    # PoseTrack never labels the ears: they carry no weight
    assert np.all(weights[:, 3:5] == 0)


def test_short_training_lowers_loss_and_peaks_heatmaps(trained: tuple[TDMI, list[float]]) -> None:
    model, history = trained
    assert len(history) == 60
    assert not model.training
    assert np.mean(history[-10:]) < 0.5 * np.mean(history[:5])
    clips, _ = sample_clips(4, CFG.input_size, CFG.num_frames, seed=99)  # held out
    torch.manual_seed(0)
    random_model = TDMI(CFG).eval()
    assert _peak(model, clips) > _peak(random_model, clips)


def test_checkpoint_round_trip_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth.pt"
    args = ["--config", "tdmi-tiny", "--steps", "3", "--batch", "2", "--clips-pool", "4", "--eval-clips", "2"]
    rc = sw.main([*args, "--no-progress", "-o", str(out)])
    assert rc == 0
    assert "NOT pose weights" in capsys.readouterr().out
    extra = torch.load(out, map_location="cpu", weights_only=True)["extra"]
    assert extra["trained_on"] == "built-in synthetic clips"
    assert extra["steps"] == 3 and "NOT pose weights" in extra["warning"]
    assert set(extra["heldout"]) >= {"pck", "peak_mean"}


def test_saved_trained_model_reloads_with_the_same_outputs(
    trained: tuple[TDMI, list[float]], tmp_path: Path
) -> None:
    from tdmi.model import save_checkpoint

    model, _ = trained
    path = save_checkpoint(model, tmp_path / "t.pt", extra={"trained_on": "built-in synthetic clips"})
    loaded = load_checkpoint(path)
    clips, _ = sample_clips(2, CFG.input_size, CFG.num_frames, seed=7)
    x = torch.from_numpy(clips)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))


def test_evaluate_reports_meaningful_fields(trained: tuple[TDMI, list[float]]) -> None:
    stats = sw.evaluate_synthetic(trained[0], CFG, n=4)
    assert 0.0 <= stats["pck"] <= 1.0
    assert stats["mean_dist_px"] >= 0.0 and np.isfinite(stats["peak_mean"])


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="batch"):
        sw.train_on_synthetic("tdmi-tiny", steps=1, batch=0, progress=False)
