"""How a Triton deployment batches and runs TDMI: one typed config, embedded in every model's config.pbtxt."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from tdmi.errors import ConfigError
from tdmi.spec.decoding import REFINES, Refine
from tdmi.utils import json_object, reject_unknown_fields

KINDS = ("cpu", "gpu")

# Model names in a repository; clients address them by these.
HEATMAP_MODEL = "tdmi"
NOBATCH_MODEL = "tdmi_nobatch"
PRE_MODEL = "tdmi_pre"
POST_MODEL = "tdmi_post"
POSE_MODEL = "tdmi_pose"

# Tensor names of the end-to-end model (the heatmap model keeps the ONNX names frames/heatmaps).
IMAGES = "images"
BOXES = "boxes"
CENTERS = "centers"
SCALES = "scales"
KEYPOINTS = "keypoints"
SCORES = "scores"


@dataclass(frozen=True)
class ServeConfig:
    """Batching and placement of the served models (what a deployer tunes per GPU/CPU)."""

    max_batch_size: int = 16
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16)
    max_queue_delay_us: int = 2000
    instances: int = 1
    kind: str = "cpu"  # instance_group kind of the heatmap model: cpu or gpu
    refine: Refine = "dark"  # heatmap decoding of the pose model
    bgr: bool = True  # images are BGR (as cv2 reads them) unless False
    threads: int = 0  # ONNX Runtime intra-op threads per instance in the Python backend (0: its default)

    def __post_init__(self) -> None:
        object.__setattr__(self, "preferred_batch_sizes", tuple(int(b) for b in self.preferred_batch_sizes))
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ConfigError(
                f"preferred_batch_sizes must lie in 1..max_batch_size={self.max_batch_size}, got {bad}"
            )
        if self.max_queue_delay_us < 0:
            raise ConfigError(f"max_queue_delay_us must be 0 or more, got {self.max_queue_delay_us}")
        if self.instances < 1:
            raise ConfigError(f"instances must be at least 1, got {self.instances}")
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.refine not in REFINES:
            raise ConfigError(f"refine must be one of {', '.join(REFINES)}, got {self.refine!r}")
        if self.threads < 0:
            raise ConfigError(f"threads must be 0 (default) or more, got {self.threads}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServeConfig:
        reject_unknown_fields(cls, data, "serve config")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls.from_dict(json_object(text, "serve config"))
