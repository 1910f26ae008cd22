"""TDMI: multi-stage temporal difference encoder, incremental cascade, RDM gates, heatmap head.

Follows ``ARCHITECTURE.md``. The temporal differences are written as constant-index slices, a
subtraction and a concatenation so they export as plain static ONNX ops, in modules named
``tde.stage{j}.diff`` so graph rewrites can find them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from tdmi.model.dcn import deform_conv2d_decomposed, guard_offsets
from tdmi.model.hrnet import BasicBlock, HRNet, make_blocks
from tdmi.spec.config import TDMIConfig, get_preset


class TemporalDifference(nn.Module):
    """S = concat_k(F[k+1] - F[k]) over the T frames of each clip: [B*T,C,h,w] -> [B,(T-1)*C,h,w]."""

    def __init__(self, num_frames: int) -> None:
        super().__init__()
        self.num_frames = num_frames

    def forward(self, x: Tensor) -> Tensor:
        t = self.num_frames
        _, c, h, w = x.shape
        x5 = x.reshape(-1, t, c, h, w)
        diffs = [x5[:, k + 1 : k + 2] - x5[:, k : k + 1] for k in range(t - 1)]
        return torch.cat(diffs, dim=2).reshape(-1, (t - 1) * c, h, w)


def _in_onnx_export() -> bool:
    """``torch.onnx.is_in_onnx_export()`` without importing ``torch.onnx`` (0.5 s) when nothing exports."""
    onnx_mod = sys.modules.get("torch.onnx")
    return onnx_mod is not None and bool(onnx_mod.is_in_onnx_export())


class ModulatedDeformConv(nn.Module):
    """DCN v2: offsets and mask from a conv on the same input, mask through a sigmoid.

    ``impl`` picks torchvision's kernel (ONNX ``DeformConv``) or the standard-op form of
    :mod:`tdmi.model.dcn` (ONNX ``GridSample`` + ``Conv``); the parameters are the same.

    In PyTorch the offsets pass :func:`tdmi.model.dcn.guard_offsets` first: a checkpoint with huge
    (finite) weights gives NaN offsets, on which torchvision's CPU kernel segfaults; the guard is exact
    (see there) and makes both forms agree on +-Inf offsets too. It is left out of ONNX exports, whose
    graphs stay as before: ONNX Runtime's DeformConv range-checks NaN and huge offsets itself (tested).
    """

    def __init__(self, channels: int, kernel: int = 3, offset_groups: int = 1, impl: str = "native") -> None:
        super().__init__()
        self.kernel = kernel
        self.offset_groups = offset_groups
        self.impl = impl
        kk = kernel * kernel
        self.offset_mask = nn.Conv2d(channels, 3 * offset_groups * kk, kernel, padding=kernel // 2)
        # Start as a plain convolution (zero offsets, mask 0.5) as DCN v2 does.
        nn.init.zeros_(self.offset_mask.weight)
        assert self.offset_mask.bias is not None  # nn.Conv2d has a bias unless bias=False
        nn.init.zeros_(self.offset_mask.bias)
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=1)

    def forward(self, x: Tensor) -> Tensor:
        om = self.offset_mask(x)
        n = 2 * self.offset_groups * self.kernel * self.kernel
        offset, mask = om[:, :n], torch.sigmoid(om[:, n:])
        p = self.kernel // 2
        op = deform_conv2d_decomposed if self.impl == "decomposed" else deform_conv2d
        if _in_onnx_export():
            return op(x, offset, self.weight, self.bias, padding=(p, p), mask=mask)
        k = (self.kernel, self.kernel)
        safe, nan_px = guard_offsets(offset, (x.shape[-2], x.shape[-1]), k, padding=(p, p))
        out = op(x, safe, self.weight, self.bias, padding=(p, p), mask=mask)
        return out.masked_fill(nan_px, float("nan"))


def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TDEStage(nn.Module):
    """One stage j of the encoder: differences -> N_j residual blocks (D[j]) -> DCN."""

    def __init__(
        self, in_channels: int, num_frames: int, motion_channels: int, blocks: int, cfg: TDMIConfig
    ) -> None:
        super().__init__()
        self.diff = TemporalDifference(num_frames)
        self.blocks = make_blocks(BasicBlock, (num_frames - 1) * in_channels, motion_channels, blocks)
        self.dcn = ModulatedDeformConv(
            motion_channels, cfg.dcn_kernel, cfg.dcn_offset_groups, cfg.deform_conv
        )

    def forward(self, feature: Tensor) -> Tensor:
        return self.dcn(self.blocks(self.diff(feature)))


class TemporalDifferenceEncoder(nn.Module):
    """Four TDE stages and the incremental cascade M[j] = Conv(M[j-1] + DCN(D[j]))."""

    def __init__(self, cfg: TDMIConfig) -> None:
        super().__init__()
        cm = cfg.resolved_motion_channels
        chans = cfg.resolved_stage_channels
        self.stage1 = TDEStage(chans[0], cfg.num_frames, cm, cfg.tde_blocks[0], cfg)
        self.stage2 = TDEStage(chans[1], cfg.num_frames, cm, cfg.tde_blocks[1], cfg)
        self.stage3 = TDEStage(chans[2], cfg.num_frames, cm, cfg.tde_blocks[2], cfg)
        self.stage4 = TDEStage(chans[3], cfg.num_frames, cm, cfg.tde_blocks[3], cfg)
        self.cascade = nn.ModuleList([conv_bn_relu(cm, cm, cfg.cascade_kernel) for _ in range(4)])

    def forward(self, features: list[Tensor]) -> Tensor:
        stages = (self.stage1, self.stage2, self.stage3, self.stage4)
        m = self.cascade[0](stages[0](features[0]))
        for j in range(1, 4):
            m = self.cascade[j](m + stages[j](features[j]))
        return m


class ChannelGate(nn.Module):
    """Global average pool -> MLP -> sigmoid, one weight per channel."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        w = torch.sigmoid(self.mlp(x.mean(dim=(2, 3))))
        return x * w[:, :, None, None]


class RepresentationDisentanglement(nn.Module):
    """Useful and noisy gates on M_t. Only the useful one runs at inference."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.useful = ChannelGate(channels, reduction)
        self.noisy = ChannelGate(channels, reduction)  # training-only

    def forward(self, m: Tensor) -> Tensor:
        return self.useful(m)

    def split(self, m: Tensor) -> tuple[Tensor, Tensor]:
        return self.useful(m), self.noisy(m)


class HeatmapHead(nn.Module):
    """Aggregate M_u with the key frame's final feature, refine, predict J heatmaps."""

    def __init__(
        self, motion_channels: int, feature_channels: int, head_channels: int, blocks: int, joints: int
    ) -> None:
        super().__init__()
        self.aggregate = conv_bn_relu(motion_channels + feature_channels, head_channels, 3)
        self.blocks = (
            make_blocks(BasicBlock, head_channels, head_channels, blocks) if blocks else nn.Identity()
        )
        self.final_layer = nn.Conv2d(head_channels, joints, kernel_size=1)

    def forward(self, useful: Tensor, key_feature: Tensor) -> Tensor:
        return self.final_layer(self.blocks(self.aggregate(torch.cat([useful, key_feature], dim=1))))


@dataclass
class TDMITrainOutput:
    """What the losses need in training mode."""

    heatmaps: Tensor
    useful: Tensor  # M_u [B, C_m, h, w]
    noisy: Tensor  # M_n [B, C_m, h, w]
    useful_pooled: Tensor  # [B, C_m]
    noisy_pooled: Tensor  # [B, C_m]


class TDMI(nn.Module):
    """The TDMI network: ``[B, T, 3, H, W]`` frames -> ``[B, J, H/4, W/4]`` key-frame heatmaps."""

    def __init__(self, config: TDMIConfig) -> None:
        super().__init__()
        self.config = config
        cm = config.resolved_motion_channels
        self.backbone = HRNet(num_joints=config.num_joints, config=config.backbone)
        self.tde = TemporalDifferenceEncoder(config)
        self.rdm = RepresentationDisentanglement(cm, config.gate_reduction)
        self.head = HeatmapHead(
            cm, config.backbone.width, config.resolved_head_channels, config.head_blocks, config.num_joints
        )

    @classmethod
    def from_preset(cls, name: str, **overrides: object) -> TDMI:
        cfg = get_preset(name)
        if overrides:
            cfg = cfg.replace(**overrides)
        return cls(cfg)

    def set_deform_conv(self, impl: str) -> None:
        """Switch every DCN between ``native`` and ``decomposed`` (weights untouched; config follows)."""
        self.config = self.config.replace(deform_conv=impl)  # validates impl
        for module in self.modules():
            if isinstance(module, ModulatedDeformConv):
                module.impl = impl

    def _encode(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        t = self.config.num_frames
        _, _, c, h, w = frames.shape
        feats = self.backbone.forward_features(frames.reshape(-1, c, h, w))
        f4 = feats[3]
        f4_5 = f4.reshape(-1, t, *f4.shape[1:])
        k = self.config.key_frame
        key_feature = f4_5[:, k : k + 1].flatten(1, 2)
        return self.tde(feats), key_feature

    def forward(self, frames: Tensor) -> Tensor | TDMITrainOutput:
        if frames.dim() != 5 or frames.shape[1] != self.config.num_frames:
            raise ValueError(
                f"expected frames [B, {self.config.num_frames}, 3, H, W], got {tuple(frames.shape)}"
            )
        motion, key_feature = self._encode(frames)
        if not self.training:
            return self.head(self.rdm(motion), key_feature)
        useful, noisy = self.rdm.split(motion)
        return TDMITrainOutput(
            heatmaps=self.head(useful, key_feature),
            useful=useful,
            noisy=noisy,
            useful_pooled=useful.mean(dim=(2, 3)),
            noisy_pooled=noisy.mean(dim=(2, 3)),
        )
