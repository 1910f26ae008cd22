"""Weights with peaked heatmaps, trained briefly on the built-in synthetic stick-figure clips.

**These are NOT pose weights.** No trained TDMI weights are available to this project, and random
weights give nearly flat heatmaps, whose argmax moves with any rounding noise: FP16/INT8 keypoint
agreement measured on them means nothing. A model trained for a few hundred steps on the procedurally
drawn figures of :mod:`tdmi.data.sample` (whose keypoints are known exactly) produces peaked
heatmaps, so the numerics of the exported variants can be compared meaningfully. It says nothing
about accuracy on real people.

``python -m tdmi.train.synthetic --config tdmi-tiny --steps 300 -o /tmp/ckpt.pt``
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tdmi.data.sample import SampleClipInfo, sample_clips
from tdmi.data.transforms import get_max_preds
from tdmi.model import TDMI, TDMIConfig, resolve_config, save_checkpoint
from tdmi.train import TrainConfig, heatmap_targets, train
from tdmi.train.validate import joints_in_heatmap

__all__ = [
    "NOT_POSE_WEIGHTS",
    "evaluate_synthetic",
    "heatmap_targets",
    "main",
    "recalibrate_batchnorm",
    "train_on_synthetic",
]

NOT_POSE_WEIGHTS = (
    "NOT pose weights: trained briefly on the toolkit's built-in procedurally drawn stick-figure clips, "
    "only so heatmaps are peaked when benchmarking FP32/FP16/INT8 numerics"
)


def _joints_in_heatmap(infos: Sequence[SampleClipInfo], config: TDMIConfig) -> np.ndarray:
    return joints_in_heatmap(infos, config)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, clips: Tensor, batch: int = 4) -> None:
    """Re-estimate BatchNorm running statistics as a plain average over ``clips`` (train-mode forward).

    A few hundred small-batch steps leave running stats (momentum 0.1) that lag the weights; eval-mode
    outputs then differ from what training saw. Cheap to fix and makes the exported heatmaps peaked.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    try:
        for k in range(0, clips.shape[0], batch):
            model(clips[k : k + batch])
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom
        model.eval()


@torch.no_grad()
def evaluate_synthetic(
    model: nn.Module,
    config: TDMIConfig | str,
    n: int = 16,
    seed: int = 12345,
    batch: int = 4,
    radius: float = 2.0,
) -> dict[str, float]:
    """Held-out check that the heatmaps mean something: peak value and argmax-within-``radius`` rate.

    Uses clips from a different seed than training. ``pck`` is the fraction of visible joints whose
    integer argmax lies within ``radius`` heatmap pixels of the true joint. The failure counts
    (clips under 0.5 PCK, joints more than 10 px off, largest heatmap value) expose runaway
    activations that an average hides.
    """
    cfg = resolve_config(config)
    clips, infos = sample_clips(n, cfg.input_size, cfg.num_frames, seed=seed)
    model.eval()
    outs = [model(torch.from_numpy(clips[k : k + batch])).numpy() for k in range(0, n, batch)]
    hm = np.concatenate(outs)
    preds, maxvals = get_max_preds(hm)
    truth = _joints_in_heatmap(infos, cfg)
    vis = np.stack([i.keypoints[:, 2] > 0 for i in infos])
    dist = np.linalg.norm(preds - truth, axis=-1)
    hit = (dist <= radius) & vis
    per_clip = hit.sum(axis=1) / np.maximum(vis.sum(axis=1), 1)
    return {
        "pck": float((dist[vis] <= radius).mean()),
        "mean_dist_px": float(dist[vis].mean()),
        "peak_mean": float(maxvals[..., 0][vis].mean()),
        "peak_median": float(np.median(maxvals[..., 0][vis])),
        "peak_max": float(np.abs(hm).max()),
        "clips_below_half_pck": float((per_clip < 0.5).sum()),
        "joints_over_10px": float((dist[vis] > 10).sum()),
        "clips": float(n),
    }


class _StepHook:
    """After each training step: the loss history, the BatchNorm freeze, snapshots and log lines."""

    def __init__(
        self,
        steps: int,
        batch: int,
        pool_clips: Tensor | None,
        freeze_bn_after: int | None,
        save_every: int,
        save_path: Path | None,
        log_every: int,
    ) -> None:
        self.steps, self.batch, self.pool_clips = steps, batch, pool_clips
        self.freeze_bn_after, self.save_every, self.save_path = freeze_bn_after, save_every, save_path
        self.log_every = log_every
        self.history: list[float] = []

    def frozen(self, step: int) -> bool:
        return self.freeze_bn_after is not None and step >= self.freeze_bn_after

    def __call__(self, step: int, record: dict[str, float], model: TDMI) -> None:
        self.history.append(record["heatmap"])
        if step == self.freeze_bn_after and step > 0 and self.pool_clips is not None:
            recalibrate_batchnorm(model, self.pool_clips, self.batch)  # the statistics the frozen phase keeps
        if (
            self.save_every > 0
            and self.save_path is not None
            and step % self.save_every == 0
            and step < self.steps
        ):
            snap = copy.deepcopy(model)
            if self.pool_clips is not None and not self.frozen(step):
                recalibrate_batchnorm(snap, self.pool_clips, self.batch)
            save_checkpoint(snap, self.save_path, extra={"warning": NOT_POSE_WEIGHTS, "partial_steps": step})
            print(f"step {step}: intermediate checkpoint -> {self.save_path}", file=sys.stderr, flush=True)
        if self.log_every > 0 and step % self.log_every == 0:
            recent = float(np.mean(self.history[-self.log_every :]))
            print(f"step {step}/{self.steps} heatmap loss {recent:.3e}", file=sys.stderr, flush=True)


def train_on_synthetic(
    config: TDMIConfig | str,
    steps: int,
    batch: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    clips_pool: int = 64,
    progress: bool = True,
    bn_recalibration_clips: int = 16,
    log_every: int = 0,
    grad_clip: float = 0.0,
    cosine: bool = False,
    warmup: int = 0,
    fresh_clips: bool = False,
    save_every: int = 0,
    save_path: Path | None = None,
    init: Path | None = None,
    freeze_bn_after: int | None = None,
) -> tuple[TDMI, list[float]]:
    """Train a fresh TDMI on the built-in synthetic clips; return it (eval mode) and the heatmap-loss history.

    NOT pose weights (see the module docstring): only a model whose heatmaps are peaked, for
    benchmarking numerics. A thin use of :func:`tdmi.train.train` (``--data synthetic``): Adam over
    the model and the MI estimator, the full TDMI loss (heatmap MSE + vCLUB), batches from a fixed
    pool of ``clips_pool`` clips in shuffled epochs (a pool smaller than ``batch`` is grown to it).
    Afterwards BatchNorm statistics are re-estimated on ``bn_recalibration_clips`` pool clips (0 to
    skip). ``log_every`` > 0 prints the mean loss of every that many steps to stderr (for long runs
    whose output is not a terminal).

    Against the runaway activations of short runs on a small pool (held-out heatmaps peaking at 20
    instead of ~1, whole clips lost): ``fresh_clips`` draws new clips for every batch (no pool to
    over-fit; the pool then only serves BatchNorm re-estimation), ``grad_clip`` > 0 clips the global
    gradient norm, ``cosine`` decays the learning rate to zero after ``warmup`` linear steps.
    ``save_every`` > 0 writes an intermediate checkpoint (BatchNorm re-estimated on a copy) to
    ``save_path`` so a run cut short still leaves its best point.

    The cure that works is ``freeze_bn_after``: with batches of 2 clips, per-batch BatchNorm
    statistics hide feature scales that inference (running statistics) then amplifies stage after
    stage on some clips, so whole held-out clips are lost. From step ``freeze_bn_after`` on, the
    statistics are re-estimated once on the pool and then used and kept (eval-mode BatchNorm), and
    the weights learn under the normalisation they are run with; no re-estimation follows, because
    it would undo that. ``init`` starts from a TDMI checkpoint (e.g. a finished run to fine-tune).
    """
    if steps < 0 or batch < 1 or clips_pool < 1:
        raise ValueError(f"need steps >= 0, batch >= 1, clips_pool >= 1; got {steps}, {batch}, {clips_pool}")
    cfg = resolve_config(config)
    pool = max(clips_pool, batch)
    if steps == 0:
        torch.manual_seed(seed)
        return TDMI(cfg).eval(), []
    tc = TrainConfig(
        data="synthetic",
        steps=steps,
        batch_size=batch,
        lr=lr,
        seed=seed,
        clips_pool=pool,
        fresh_clips=fresh_clips,
        grad_clip=grad_clip,
        schedule="cosine" if cosine else "constant",
        warmup_steps=warmup,
        val_every=0,
        log_every=0,
        freeze_bn_after=freeze_bn_after,
    )
    bn_clips = min(bn_recalibration_clips, pool)
    pool_clips = (
        torch.from_numpy(sample_clips(pool, cfg.input_size, cfg.num_frames, seed=seed)[0][:bn_clips])
        if bn_clips > 0
        else None
    )
    hook = _StepHook(steps, batch, pool_clips, freeze_bn_after, save_every, save_path, log_every)
    with tempfile.TemporaryDirectory(prefix="tdmi-synthetic-") as run_dir:
        result = train(cfg, tc, run_dir, init=init, progress=progress, on_step=hook, keep_checkpoints=False)
    model = result.model
    if pool_clips is not None and not hook.frozen(steps):
        recalibrate_batchnorm(model, pool_clips, batch)
    return model.eval(), hook.history


def _summary(history: Sequence[float], parts: int = 10) -> list[float]:
    """Mean loss over ``parts`` equal chunks of the history (a loss curve that fits in a log line)."""
    if not history:
        return []
    chunks = np.array_split(np.asarray(history, dtype=np.float64), min(parts, len(history)))
    return [float(c.mean()) for c in chunks]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tdmi.train.synthetic",
        description="Train weights with peaked heatmaps on the built-in synthetic clips (NOT pose weights; "
        "for benchmarking FP32/FP16/INT8 numerics only).",
    )
    p.add_argument("--config", "-c", default="tdmi-tiny", help="preset name or config JSON")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips-pool", type=int, default=64, help="distinct training clips")
    p.add_argument("--eval-clips", type=int, default=16, help="held-out clips for the check (0: skip)")
    p.add_argument("--log-every", type=int, default=0, help="print the mean loss every N steps to stderr")
    p.add_argument("--grad-clip", type=float, default=0.0, help="clip the global gradient norm (0: off)")
    p.add_argument("--cosine", action="store_true", help="cosine learning-rate decay to 0")
    p.add_argument("--warmup", type=int, default=0, help="linear learning-rate warm-up steps")
    p.add_argument("--fresh-clips", action="store_true", help="draw every batch as new clips (no pool)")
    p.add_argument("--bn-clips", type=int, default=16, help="pool clips for the BatchNorm re-estimation")
    p.add_argument(
        "--freeze-bn-after",
        type=int,
        default=None,
        help="from this step on, BatchNorm uses and keeps its running statistics (0: whole run)",
    )
    p.add_argument("--init", type=Path, default=None, help="start from this TDMI checkpoint (fine-tune)")
    p.add_argument("--save-every", type=int, default=0, help="write an intermediate checkpoint every N steps")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-o", "--output", type=Path, required=True, help="checkpoint path (.pt)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    cfg = resolve_config(args.config)
    t0 = time.perf_counter()
    model, history = train_on_synthetic(
        cfg,
        args.steps,
        args.batch,
        args.lr,
        args.seed,
        args.clips_pool,
        progress=not args.no_progress,
        bn_recalibration_clips=args.bn_clips,
        log_every=args.log_every,
        grad_clip=args.grad_clip,
        cosine=args.cosine,
        warmup=args.warmup,
        fresh_clips=args.fresh_clips,
        save_every=args.save_every,
        save_path=args.output,
        init=args.init,
        freeze_bn_after=args.freeze_bn_after,
    )
    train_s = time.perf_counter() - t0
    extra: dict[str, Any] = {
        "trained_on": "built-in synthetic clips",
        "warning": NOT_POSE_WEIGHTS,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "clips_pool": args.clips_pool,
        "grad_clip": args.grad_clip,
        "cosine": args.cosine,
        "warmup": args.warmup,
        "fresh_clips": args.fresh_clips,
        "bn_clips": args.bn_clips,
        "freeze_bn_after": args.freeze_bn_after,
        "init": str(args.init) if args.init is not None else None,
        "train_seconds": round(train_s, 1),
        "heatmap_loss_first": history[0] if history else None,
        "heatmap_loss_last": history[-1] if history else None,
        "heatmap_loss_curve": _summary(history),
    }
    if args.eval_clips > 0:
        extra["heldout"] = evaluate_synthetic(model, cfg, n=args.eval_clips, batch=args.batch)
    save_checkpoint(model, args.output, extra=extra)
    print(f"{cfg.name}: {args.steps} steps x batch {args.batch} in {train_s:.0f} s -> {args.output}")
    print("  " + NOT_POSE_WEIGHTS)
    print("  heatmap loss per tenth:", " ".join(f"{v:.3e}" for v in extra["heatmap_loss_curve"]))
    if "heldout" in extra:
        print("  held-out:", ", ".join(f"{k} {v:.4g}" for k, v in extra["heldout"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
