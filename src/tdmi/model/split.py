"""TDMI cut in two at the backbone: a per-frame part and a temporal part.

Over a video each frame sits in T clips, so running the backbone per clip repeats it T times. The
per-frame part (one crop -> the four HRNet stage features the TDE reads; the fourth is also the key
frame's final feature) can run once per frame and its outputs be reused; the temporal part takes the
T frames' stacked features to heatmaps. ``TemporalHead(FrameBackbone(frames))`` is exactly the whole
model's eval forward.
"""

from __future__ import annotations

from torch import Tensor, nn

from tdmi.artifacts.split import HEAD_INPUTS
from tdmi.model.tdmi import TDMI

STAGE_NAMES = HEAD_INPUTS  # the split head graph's input names


class FrameBackbone(nn.Module):
    """``[N, 3, H, W]`` crops -> the four stage features ``[N, C_j, H/4, W/4]`` (weights shared)."""

    def __init__(self, model: TDMI) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        f1, f2, f3, f4 = self.backbone.forward_features(frames)
        return f1, f2, f3, f4


class TemporalHead(nn.Module):
    """Four ``[B, T, C_j, h, w]`` stacks of per-frame features -> ``[B, J, h, w]`` key-frame heatmaps.

    The key feature is stage 4 of the key frame (``T // 2``), sliced here as the whole model does.
    """

    def __init__(self, model: TDMI) -> None:
        super().__init__()
        self.num_frames = model.config.num_frames
        self.key_frame = model.config.key_frame
        self.tde = model.tde
        self.rdm = model.rdm
        self.head = model.head

    def forward(self, s1: Tensor, s2: Tensor, s3: Tensor, s4: Tensor) -> Tensor:
        feats = [s.flatten(0, 1) for s in (s1, s2, s3, s4)]
        k = self.key_frame
        key_feature = s4[:, k]
        return self.head(self.rdm(self.tde(feats)), key_feature)


def split_model(model: TDMI) -> tuple[FrameBackbone, TemporalHead]:
    """The two eval-mode halves of ``model`` (weights shared, not copied)."""
    model.eval()
    return FrameBackbone(model).eval(), TemporalHead(model).eval()
