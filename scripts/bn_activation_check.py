"""Where runaway activations start: per-stage peaks with inference BatchNorm vs per-clip statistics.

Why: synthetic-trained weights lost whole held-out clips (heatmaps peaking at 20-40 instead of ~1).
This runs the same held-out clips twice, with BatchNorm as inference runs it (running statistics)
and with each clip normalised by its own statistics (train-mode BatchNorm on a copy, so the
checkpoint is untouched), and prints the largest activation after each backbone stage, the TDE and
the head, for the clips inference gets right and those it fails. Growth that per-clip statistics
remove means the weights learnt under per-batch statistics that inference does not reproduce: the
cue for ``--freeze-bn-after``. Usage:

    python scripts/bn_activation_check.py w32-synthetic.pt --clips 24 --json out/bn-check.json
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tdmi.data.sample import sample_clips
from tdmi.data.transforms import get_max_preds
from tdmi.model import load_checkpoint
from tdmi.train.validate import joints_in_heatmap
from tdmi.utils import write_text_atomic

STAGES = (
    "backbone.conv1",
    "backbone.layer1",
    "backbone.stage2",
    "backbone.stage3",
    "backbone.stage4",
    "tde",
    "head.aggregate",
    "head",
)
SEED = 12345  # the held-out seed of tdmi.train.synthetic


@torch.no_grad()
def run(
    model: nn.Module, clips: np.ndarray, per_clip_stats: bool
) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Heatmaps [N, J, h, w] and, per stage, each clip's largest absolute activation."""
    net = copy.deepcopy(model).eval()
    if per_clip_stats:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
    modules = dict(net.named_modules())
    peaks: dict[str, list[float]] = {k: [] for k in STAGES if k in modules}

    def hook(name: str) -> Callable[[nn.Module, object, object], None]:
        def f(_m: nn.Module, _i: object, o: object) -> None:
            t = o[0] if isinstance(o, (list, tuple)) else o
            peaks[name].append(float(t.abs().amax()))

        return f

    for k in peaks:
        modules[k].register_forward_hook(hook(k))
    out = [net(torch.from_numpy(clips[i : i + 1])).numpy() for i in range(len(clips))]
    return np.concatenate(out), peaks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--radius", type=float, default=2.0, help="PCK radius in heatmap pixels")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    model = load_checkpoint(args.checkpoint)
    cfg = model.config
    clips, infos = sample_clips(args.clips, cfg.input_size, cfg.num_frames, seed=SEED)
    truth = joints_in_heatmap(infos, cfg)
    vis = np.stack([i.keypoints[:, 2] > 0 for i in infos])
    report: dict[str, object] = {"checkpoint": str(args.checkpoint), "clips": args.clips, "seed": SEED}
    fail_mask = None
    for mode, per_clip in (("inference", False), ("per_clip_stats", True)):
        hm, peaks = run(model, clips, per_clip)
        preds, _ = get_max_preds(hm)
        hit = (np.linalg.norm(preds - truth, axis=-1) <= args.radius) & vis
        pck = hit.sum(1) / np.maximum(vis.sum(1), 1)
        if fail_mask is None:
            fail_mask = pck < 0.5  # split by how inference does
        groups = {"right": ~fail_mask, "failed": fail_mask}
        report[mode] = {
            "pck": float(hit.sum() / vis.sum()),
            "failed_clips": int((pck < 0.5).sum()),
            "heatmap_max": float(np.abs(hm).max()),
            "stage_peaks": {
                k: {g: float(np.max(np.asarray(v)[m])) if m.any() else None for g, m in groups.items()}
                for k, v in peaks.items()
            },
        }
        r = report[mode]
        print(f"{mode}: PCK@{args.radius:g}px {r['pck']:.3f}, failed clips {r['failed_clips']}, "
              f"largest heatmap value {r['heatmap_max']:.2f}")  # fmt: skip
        for k, v in r["stage_peaks"].items():
            cells = "  ".join(f"{g} {'—' if x is None else f'{x:9.2f}'}" for g, x in v.items())
            print(f"  {k:18s} largest |activation|: {cells}")
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
