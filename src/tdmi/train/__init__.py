"""Training and fine-tuning TDMI: PoseTrack or synthetic clips, one process or DDP under torchrun.

Names are loaded on first use (PEP 562), so ``tdmi.train.config`` (torch-free: ``tdmi-train -h``
and its option checks) does not import torch; ``from tdmi.train import train`` does.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "TrainConfig": "tdmi.train.config",
    "PoseTrackClips": "tdmi.train.data",
    "StepBatchSampler": "tdmi.train.data",
    "SyntheticClips": "tdmi.train.data",
    "heatmap_targets": "tdmi.train.data",
    "BEST": "tdmi.train.loop",
    "LAST": "tdmi.train.loop",
    "LOG": "tdmi.train.loop",
    "PLOT": "tdmi.train.loop",
    "TrainResult": "tdmi.train.loop",
    "train": "tdmi.train.loop",
    "posetrack_map": "tdmi.train.validate",
    "synthetic_pck": "tdmi.train.validate",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'tdmi.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
