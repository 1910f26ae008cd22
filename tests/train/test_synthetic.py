"""Synthetic-clip training: a short run must give lower loss and more peaked heatmaps, and round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tdmi.data.sample import sample_clips
from tdmi.model import TDMI, get_preset, load_checkpoint
from tdmi.train import synthetic as sw

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


def _bn_stats(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.clone() for k, v in model.state_dict().items() if k.endswith(("running_mean", "running_var"))
    }


def test_frozen_batchnorm_phase_keeps_the_statistics_it_learns_under(
    trained: tuple[TDMI, list[float]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--init + --freeze-bn-after 0 fine-tunes weights but keeps the checkpoint's BatchNorm statistics.

    Re-estimating them afterwards would undo what the frozen phase learnt, so the saved statistics
    must be exactly the initial ones while the convolution weights moved.
    """
    from tdmi.model import save_checkpoint

    init = save_checkpoint(trained[0], tmp_path / "init.pt")
    out = tmp_path / "ft.pt"
    args = ["--config", "tdmi-tiny", "--steps", "3", "--batch", "2", "--clips-pool", "4", "--eval-clips", "0"]
    assert (
        sw.main([*args, "--init", str(init), "--freeze-bn-after", "0", "--no-progress", "-o", str(out)]) == 0
    )
    capsys.readouterr()
    before, after = load_checkpoint(init), load_checkpoint(out)
    for k, v in _bn_stats(before).items():
        torch.testing.assert_close(_bn_stats(after)[k], v, rtol=0, atol=0, msg=k)
    w = "backbone.conv1.weight"
    assert not torch.equal(before.state_dict()[w], after.state_dict()[w])
    extra = torch.load(out, map_location="cpu", weights_only=True)["extra"]
    assert extra["freeze_bn_after"] == 0 and extra["init"] == str(init)


def test_freezing_batchnorm_midway_keeps_the_statistics_from_then_on(tmp_path: Path) -> None:
    """tdmi-train --freeze-bn-after: unfrozen, the statistics move every step; from then on they stay."""
    seen: list[dict[str, torch.Tensor]] = []
    from tdmi.train import TrainConfig, train

    def spy(step: int, record: dict[str, float], model: TDMI) -> None:
        seen.append(_bn_stats(model))

    tc = TrainConfig(steps=4, batch_size=2, clips_pool=4, val_every=0, freeze_bn_after=2)
    train(CFG, tc, tmp_path / "run", progress=False, on_step=spy)
    key = "backbone.bn1.running_mean"
    assert not torch.equal(seen[0][key], seen[1][key])  # step 2 still trains the statistics
    assert torch.equal(seen[1][key], seen[2][key]) and torch.equal(seen[2][key], seen[3][key])
    with pytest.raises(Exception, match="freeze_bn_after"):
        TrainConfig(freeze_bn_after=-1)


def test_bn_activation_check_script_reports_both_modes(
    trained: tuple[TDMI, list[float]], tmp_path: Path
) -> None:
    """scripts/bn_activation_check.py: the evidence behind --freeze-bn-after; the checkpoint is untouched."""
    import json
    import subprocess
    import sys

    from tdmi.model import save_checkpoint

    ckpt = save_checkpoint(trained[0], tmp_path / "t.pt")
    before = _bn_stats(load_checkpoint(ckpt))
    script = Path(__file__).resolve().parents[2] / "scripts" / "bn_activation_check.py"
    out = tmp_path / "bn.json"
    proc = subprocess.run(
        [sys.executable, str(script), str(ckpt), "--clips", "3", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    for mode in ("inference", "per_clip_stats"):
        r = report[mode]
        assert 0.0 <= r["pck"] <= 1.0 and 0 <= r["failed_clips"] <= 3 and r["heatmap_max"] > 0
        assert {"backbone.conv1", "tde", "head"} <= set(r["stage_peaks"])
    # same weights, other normalisation: the outputs must differ, or the switch did nothing
    assert report["inference"]["heatmap_max"] != report["per_clip_stats"]["heatmap_max"]
    after = _bn_stats(load_checkpoint(ckpt))
    assert all(torch.equal(before[k], after[k]) for k in before)
