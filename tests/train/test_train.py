"""tdmi-train on tdmi-tiny / CPU: loss falls, the checkpoint exports, resume is exact, DDP = 1 process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tdmi.cli.common import run_app
from tdmi.cli.train import app
from tdmi.errors import ConfigError, DataError, TrainError
from tdmi.model import get_preset, load_checkpoint
from tdmi.spec.joints import flip_permutation
from tdmi.train import LAST, LOG, PoseTrackClips, TrainConfig, posetrack_map, train
from tdmi.train.data import load_records

CFG = get_preset("tdmi-tiny")
REPO = Path(__file__).resolve().parents[2]


def _cfg(**kw: object) -> TrainConfig:
    base: dict[str, object] = {"batch_size": 2, "clips_pool": 4, "val_every": 0, "val_clips": 2}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _log(run: Path) -> list[dict[str, float]]:
    return [json.loads(x) for x in (run / LOG).read_text().splitlines()]


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 steps on 2 synthetic clips, validating (held-out PCK) every epoch, with --plot."""
    run = tmp_path_factory.mktemp("train") / "run"
    torch.set_num_threads(1)
    train(CFG, _cfg(steps=8, clips_pool=2, lr=2e-3, val_every=2), run, progress=False, plot=True)
    return run


def test_synthetic_training_lowers_the_loss_and_writes_the_run(synthetic_run: Path) -> None:
    log = _log(synthetic_run)
    steps = [r for r in log if r["kind"] == "train"]
    assert [r["step"] for r in steps] == list(range(1, 9))
    heat = [r["heatmap"] for r in steps]
    assert np.mean(heat[-2:]) < 0.8 * heat[0]
    assert all(r["clips_per_s"] > 0 and r["lr"] == pytest.approx(2e-3) for r in steps[:5])
    vals = [r for r in log if r["kind"] == "val"]
    assert [r["step"] for r in vals] == [2, 4, 6, 8]  # 1 step per epoch, validated every 2 epochs
    assert (synthetic_run / "best.pt").is_file() and (synthetic_run / "curves.png").stat().st_size > 0
    payload = torch.load(synthetic_run / LAST, map_location="cpu", weights_only=True)
    assert payload["config"]["name"] == "tdmi-tiny"
    assert payload["extra"]["step"] == 8
    assert TrainConfig.from_dict(payload["extra"]["train_config"]).steps == 8
    assert not list(synthetic_run.glob(".*.tmp"))  # atomic writes leave no temp files


def test_last_checkpoint_exports_to_onnx(synthetic_run: Path, tmp_path: Path) -> None:
    from tdmi.export.onnx_export import export_onnx

    res = export_onnx(None, tmp_path / "m.onnx", checkpoint=synthetic_run / LAST, progress=False)
    assert res.path.is_file() and res.config.name == "tdmi-tiny"
    assert res.verification is not None and res.verification.passed


def test_resume_continues_bit_exactly(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    # mid-epoch stop (4 steps per epoch), fresh clips, warm-up + cosine, clipping: all state must survive
    tc = _cfg(steps=5, clips_pool=8, fresh_clips=True, schedule="cosine", warmup_steps=2, grad_clip=1.0)
    straight = train(CFG, tc, tmp_path / "a", progress=False)
    first = train(CFG, tc, tmp_path / "b", progress=False, stop_after=3)
    assert first.step == 3
    second = train(CFG, tc, tmp_path / "b", progress=False, resume=True)
    assert [h["step"] for h in second.history] == [4, 5]
    resumed = first.history + second.history
    for a, b in zip(straight.history, resumed, strict=True):
        for k in ("total", "heatmap", "mi", "mi_estimator", "lr"):
            assert a[k] == b[k], (a["step"], k)
    sa, sb = straight.model.state_dict(), second.model.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert [r["step"] for r in _log(tmp_path / "b")] == [1, 2, 3, 4, 5]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    """torchrun -m tdmi.cli.train, 2 CPU ranks on loopback == 1 process with the same global batch."""
    torch.set_num_threads(1)
    args = ["--config", "tdmi-tiny", "--data", "synthetic", "--steps", "3", "--batch-size", "4"]
    args += ["--clips-pool", "8", "--val-every", "0", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "tdmi.cli.train"]
    proc = subprocess.run(
        [*cmd, *args, "-o", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one process, same global batch of 4 in the same two per-rank micro-batches of 2
    single = train(
        CFG, _cfg(steps=3, batch_size=4, grad_accum=2, clips_pool=8), tmp_path / "one", progress=False
    )
    ddp = [r for r in _log(tmp_path / "ddp") if r["kind"] == "train"]
    assert len(ddp) == 3
    for a, b in zip(single.history, ddp, strict=True):
        for k in ("total", "heatmap", "mi", "mi_estimator"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["step"], k)
    ddp_model = load_checkpoint(tmp_path / "ddp" / LAST)
    pa, pb = dict(single.model.named_parameters()), dict(ddp_model.named_parameters())
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-4, atol=1e-5, msg=k)
    assert not (tmp_path / "ddp" / "best.pt").exists()  # only rank 0 writes, nothing else appears
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [LAST, LOG]


def test_posetrack_fixture_trains_with_missing_frames_nearest(
    posetrack18: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fixture's val annotations stand in for a train split; neighbours are absent (nearest)."""
    torch.set_num_threads(1)
    run = tmp_path / "pt"
    args = ["--config", "tdmi-tiny", "--data", str(posetrack18), "--split", "val", "--val-split", "val"]
    args += [
        "--missing-frames",
        "nearest",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--no-progress",
        "-o",
        str(run),
    ]
    assert run_app(app, args) == 0
    log = [r for r in _log(run) if r["kind"] == "train"]
    assert len(log) == 2 and all(np.isfinite(r["total"]) for r in log)
    assert "step 2/2" in capsys.readouterr().out
    # without nearest: one line naming the option
    rc = run_app(app, [*args[:-3], "--missing-frames", "error", "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 1 and "--missing-frames nearest" in err and len(err.strip().splitlines()) == 1


def test_posetrack_val_map_is_scored_by_poseval(posetrack18: Path) -> None:
    split, _ = load_records(posetrack18, "val", CFG.num_frames, "nearest")
    torch.manual_seed(0)
    from tdmi.model import TDMI

    m = posetrack_map(TDMI(CFG), CFG, split, "nearest", torch.device("cpu"), batch=8)
    assert m["val_samples"] == 14 and 0.0 <= m["val_map"] <= 100.0


def test_flip_mirrors_the_clip_and_swaps_joints(posetrack18: Path) -> None:
    _, records = load_records(posetrack18, "val", CFG.num_frames, "nearest")
    plain = TrainConfig(scale_factor=0.0, rotation_prob=0.0, half_body_prob=0.0, flip=False)
    flip = plain.replace(flip=True)
    a = PoseTrackClips(records, CFG, plain)
    b = PoseTrackClips(records, CFG, flip)
    perm = flip_permutation(CFG.num_joints)
    flipped = 0
    for i in range(6):
        ca, ta, wa = a[i]
        cb, tb, wb = b[i]
        same = torch.equal(ca, cb)
        if same:
            continue
        flipped += 1
        # every frame is mirrored the same way (canonical crop: mirror about W/2, one pixel of shift)
        torch.testing.assert_close(cb[..., 1:], torch.flip(ca, dims=[-1])[..., :-1], atol=0.2, rtol=0)
        assert torch.equal(wb[:, 0], wa[perm, 0])
        for j in range(CFG.num_joints):
            if wb[j] > 0:
                ya, xa = np.unravel_index(int(ta[perm[j]].argmax()), ta.shape[1:])
                yb, xb = np.unravel_index(int(tb[j].argmax()), tb.shape[1:])
                assert yb == ya and abs(xb - (ta.shape[2] - xa)) <= 1
    assert flipped > 0


def test_nan_loss_stops_with_the_step_and_saves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tdmi.train.data as tdata

    real = tdata.heatmap_targets

    def poisoned(infos: object, config: object) -> tuple[np.ndarray, np.ndarray]:
        targets, weights = real(infos, config)  # type: ignore[arg-type]
        targets[:] = np.nan  # e.g. a corrupt annotation
        return targets, weights

    monkeypatch.setattr(tdata, "heatmap_targets", poisoned)
    torch.set_num_threads(1)
    run = tmp_path / "nan"
    with pytest.raises(TrainError, match=r"loss is not finite at step 1 \(total nan") as e:
        train(CFG, _cfg(steps=3, save_every=1), run, progress=False)
    assert "Last good checkpoint: none" in str(e.value)
    assert not (run / LAST).exists() and not list(run.glob(".*.tmp"))


def test_bad_inputs_give_one_clear_line(
    synthetic_run: Path, posetrack18: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def one_line(args: list[str], expect: str) -> None:
        rc = run_app(app, [*args, "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc != 0 and expect in err and len(err.splitlines()) == 1, err

    base = [
        "--config",
        "tdmi-tiny",
        "--steps",
        "8",
        "--batch-size",
        "2",
        "--clips-pool",
        "2",
        "--lr",
        "0.002",
    ]
    base += ["--val-every", "2"]
    one_line([*base, "-o", str(synthetic_run)], "pass --resume")
    one_line([*base, "--lr", "0.1", "--resume", "-o", str(synthetic_run)], "differs in: lr")
    other = ["--config", "tdmi-w32-256x192", *base[2:], "--resume", "-o", str(synthetic_run)]
    one_line(other, "was trained with model config 'tdmi-tiny'")
    one_line([*base, "--resume", "-o", str(tmp_path / "empty")], "holds no last.pt")
    one_line([*base, "--amp", "-o", str(tmp_path / "amp")], "needs a CUDA GPU")
    one_line(["--data", str(posetrack18), "-o", str(tmp_path / "s")], "no annotations/train/ split")
    one_line(["--data", str(tmp_path / "nowhere"), "-o", str(tmp_path / "s")], "does not exist")
    from tdmi.model.hrnet import HRNet

    w32 = tmp_path / "w32_hrnet.pt"
    torch.save(HRNet(num_joints=17, config=get_preset("tdmi-w32-256x192").backbone).state_dict(), w32)
    one_line([*base, "--hrnet-weights", str(w32), "-o", str(tmp_path / "h")], "does not fit the architecture")
    with pytest.raises(ConfigError, match="divisible"):
        TrainConfig(batch_size=3, grad_accum=2)
    with pytest.raises(DataError, match="fewer than one global batch"):
        train(CFG, _cfg(steps=1, clips_pool=1), tmp_path / "tiny", progress=False)
