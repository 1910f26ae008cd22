"""Training and fine-tuning TDMI: PoseTrack or synthetic clips, one process or DDP under torchrun."""

from tdmi.train.config import TrainConfig
from tdmi.train.data import PoseTrackClips, StepBatchSampler, SyntheticClips, heatmap_targets
from tdmi.train.loop import BEST, LAST, LOG, PLOT, TrainResult, train
from tdmi.train.validate import posetrack_map, synthetic_pck

__all__ = [
    "BEST",
    "LAST",
    "LOG",
    "PLOT",
    "PoseTrackClips",
    "StepBatchSampler",
    "SyntheticClips",
    "TrainConfig",
    "TrainResult",
    "heatmap_targets",
    "posetrack_map",
    "synthetic_pck",
    "train",
]
