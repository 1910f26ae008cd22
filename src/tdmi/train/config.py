"""Training hyper-parameters as a typed, JSON-serialisable dataclass, embedded in every run checkpoint."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from tdmi.errors import ConfigError
from tdmi.spec.choices import MISSING_FRAMES, MissingFrames
from tdmi.utils import reject_unknown_fields

Optimizer = Literal["adam", "adamw"]
OPTIMIZERS: tuple[Optimizer, ...] = get_args(Optimizer)
# multistep: x gamma at each milestone; cosine: down to 0 over the run; constant: the warm-up only
Schedule = Literal["multistep", "cosine", "constant"]
SCHEDULES: tuple[Schedule, ...] = get_args(Schedule)
# Fields a resumed run may change without breaking the run it continues (they do not alter the curve
# already trained, only how far it goes and what is logged / written on the way).
RESUMABLE_CHANGES = frozenset({"steps", "epochs", "val_every", "save_every", "log_every"})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's loss curve except the model config and the data path."""

    data: str = "synthetic"  # "synthetic" or a PoseTrack root / annotation folder
    split: str = "train"
    val_split: str = "val"
    missing_frames: MissingFrames = "error"  # partial downloads, as in tdmi-bench
    steps: int | None = None  # total optimiser steps; None -> epochs x steps per epoch
    epochs: int = 20
    batch_size: int = 4  # global batch (all processes, all accumulation micro-batches)
    grad_accum: int = 1  # micro-batches per step in each process
    optimizer: Optimizer = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: Schedule = "multistep"
    milestones: tuple[float, ...] = (0.7, 0.9)  # fractions of the total steps (multistep)
    gamma: float = 0.1
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max global gradient norm; 0 = off
    # From this step on BatchNorm layers normalise with (and keep) their running statistics, as in
    # inference, so the weights learn under the normalisation they will be run with; None = never.
    # Small-batch runs need it: per-batch statistics hide feature scales that eval mode then
    # amplifies stage after stage on unusual inputs.
    freeze_bn_after: int | None = None
    amp: bool = False  # float16 autocast + GradScaler, CUDA only
    seed: int = 0
    # loss = heatmap_weight * MSE + mi_weight * vCLUB(M_u; M_n) + estimator_weight * (-log q(M_n | M_u))
    heatmap_weight: float = 1.0
    mi_weight: float | None = None  # None -> the model config's mi_weight
    estimator_weight: float = 1.0
    # augmentation (PoseTrack only; identical for every frame of a clip)
    scale_factor: float = 0.35
    rotation_factor: float = 45.0
    rotation_prob: float = 0.6
    flip: bool = True
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    # synthetic data
    clips_pool: int = 64  # distinct synthetic clips per epoch
    fresh_clips: bool = False  # new synthetic clips every epoch, so no batch repeats
    # bookkeeping
    val_every: int = 1  # epochs between evaluations; 0 = never
    val_clips: int = 16  # synthetic held-out clips (PoseTrack uses the whole val split)
    save_every: int = 0  # also save last.pt every N steps; 0 = at epoch ends and at the end only
    log_every: int = 1
    workers: int = 0  # DataLoader worker processes per rank

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}")
        need(self.missing_frames in MISSING_FRAMES, "missing_frames must be 'error' or 'nearest'")
        need(self.steps is None or self.steps >= 1, f"steps must be at least 1, got {self.steps}")
        need(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        need(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}")
        need(self.grad_accum >= 1, f"grad_accum must be at least 1, got {self.grad_accum}")
        need(
            self.batch_size % self.grad_accum == 0,
            f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}",
        )
        need(self.lr > 0 and math.isfinite(self.lr), f"lr must be positive, got {self.lr}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(all(0 < m < 1 for m in self.milestones), "milestones are fractions of the run, in (0, 1)")
        need(0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}")
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        need(self.grad_clip >= 0, f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        need(
            self.freeze_bn_after is None or self.freeze_bn_after >= 0,
            f"freeze_bn_after must be >= 0 (a step) or None, got {self.freeze_bn_after}",
        )
        need(self.clips_pool >= 1, f"clips_pool must be at least 1, got {self.clips_pool}")
        for name in ("half_body_prob", "rotation_prob"):
            value = getattr(self, name)
            need(0 <= value <= 1, f"{name} must be in [0, 1], got {value}")
        need(0 <= self.scale_factor < 1, f"scale_factor must be in [0, 1), got {self.scale_factor}")
        for name in (
            "val_every",
            "save_every",
            "log_every",
            "workers",
        ):  # each named: the CLI names its option
            value = getattr(self, name)
            need(value >= 0, f"{name} must be >= 0, got {value}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        reject_unknown_fields(cls, data, "training config")
        kw = dict(data)
        if "milestones" in kw:
            kw["milestones"] = tuple(kw["milestones"])
        try:
            return cls(**kw)
        except TypeError as e:
            raise ConfigError(f"invalid training config: {e}") from None

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
