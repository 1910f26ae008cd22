"""HRNet pose backbone with the canonical module and parameter names.

Names, shapes and forward semantics follow the reference ``pose_hrnet.py`` of
deep-high-resolution-net, so public COCO / PoseTrack HRNet checkpoints load with ``strict=True``
and ``forward`` computes what those networks compute.
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from tdmi.spec.config import HRNetConfig


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes, momentum=momentum)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, momentum=momentum)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=momentum)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=momentum)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


def make_blocks(
    block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, blocks: int, momentum: float = 0.1
) -> nn.Sequential:
    """A residual stack; the first block projects with a 1x1 conv + BN when channels change."""
    downsample = None
    if inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, kernel_size=1, stride=1, bias=False),
            nn.BatchNorm2d(planes * block.expansion, momentum=momentum),
        )
    layers: list[nn.Module] = [block(inplanes, planes, 1, downsample, momentum)]
    layers += [block(planes * block.expansion, planes, momentum=momentum) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    def __init__(
        self,
        num_branches: int,
        num_blocks: int,
        num_inchannels: list[int],
        num_channels: list[int],
        multi_scale_output: bool = True,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_inchannels = list(num_inchannels)
        self.num_branches = num_branches
        self.multi_scale_output = multi_scale_output
        self.momentum = momentum
        self.branches = nn.ModuleList(
            [
                make_blocks(BasicBlock, self.num_inchannels[i], num_channels[i], num_blocks, momentum)
                for i in range(num_branches)
            ]
        )
        self.num_inchannels = [c * BasicBlock.expansion for c in num_channels]
        self.fuse_layers = self._make_fuse_layers()
        self.relu = nn.ReLU(inplace=True)

    def _make_fuse_layers(self) -> nn.ModuleList | None:
        if self.num_branches == 1:
            return None
        ch = self.num_inchannels
        m = self.momentum
        fuse_layers = []
        for i in range(self.num_branches if self.multi_scale_output else 1):
            fuse_layer: list[nn.Module | None] = []
            for j in range(self.num_branches):
                if j > i:
                    fuse_layer.append(
                        nn.Sequential(
                            nn.Conv2d(ch[j], ch[i], 1, 1, 0, bias=False),
                            nn.BatchNorm2d(ch[i], momentum=m),
                            nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                        )
                    )
                elif j == i:
                    fuse_layer.append(None)
                else:
                    convs: list[nn.Module] = []
                    for k in range(i - j):
                        if k == i - j - 1:
                            convs.append(
                                nn.Sequential(
                                    nn.Conv2d(ch[j], ch[i], 3, 2, 1, bias=False),
                                    nn.BatchNorm2d(ch[i], momentum=m),
                                )
                            )
                        else:
                            convs.append(
                                nn.Sequential(
                                    nn.Conv2d(ch[j], ch[j], 3, 2, 1, bias=False),
                                    nn.BatchNorm2d(ch[j], momentum=m),
                                    nn.ReLU(inplace=False),
                                )
                            )
                    fuse_layer.append(nn.Sequential(*convs))
            # None keeps index j for the identity path, so parameter names match the reference weights.
            fuse_layers.append(nn.ModuleList(fuse_layer))  # type: ignore[arg-type]  # ModuleList stores None
        return nn.ModuleList(fuse_layers)

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        x = [branch(xi) for branch, xi in zip(self.branches, x, strict=True)]
        assert self.fuse_layers is not None
        out = []
        for i, row in enumerate(self.fuse_layers):
            fuse = cast(nn.ModuleList, row)
            y = x[0] if i == 0 else fuse[0](x[0])
            for j in range(1, self.num_branches):
                y = y + x[j] if i == j else y + fuse[j](x[j])
            out.append(self.relu(y))
        return out


def _make_transition(pre: list[int], cur: list[int], momentum: float) -> nn.ModuleList:
    layers: list[nn.Module | None] = []
    for i in range(len(cur)):
        if i < len(pre):
            if cur[i] != pre[i]:
                layers.append(
                    nn.Sequential(
                        nn.Conv2d(pre[i], cur[i], 3, 1, 1, bias=False),
                        nn.BatchNorm2d(cur[i], momentum=momentum),
                        nn.ReLU(inplace=True),
                    )
                )
            else:
                layers.append(None)
        else:
            convs = []
            for j in range(i + 1 - len(pre)):
                inch = pre[-1]
                outch = cur[i] if j == i - len(pre) else inch
                convs.append(
                    nn.Sequential(
                        nn.Conv2d(inch, outch, 3, 2, 1, bias=False),
                        nn.BatchNorm2d(outch, momentum=momentum),
                        nn.ReLU(inplace=True),
                    )
                )
            layers.append(nn.Sequential(*convs))
    return nn.ModuleList(layers)  # type: ignore[arg-type]  # None: branch passed through unchanged


class HRNet(nn.Module):
    """HRNet-W{width} pose network; ``forward`` gives heatmaps, ``forward_features`` the 4 stage features."""

    def __init__(self, width: int = 48, num_joints: int = 17, config: HRNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or HRNetConfig(width=width)
        self.config = cfg
        m = cfg.bn_momentum
        s = cfg.stem_channels
        self.conv1 = nn.Conv2d(3, s, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(s, momentum=m)
        self.conv2 = nn.Conv2d(s, s, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(s, momentum=m)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_blocks(Bottleneck, s, cfg.layer1_planes, cfg.layer1_blocks, m)

        chans = list(cfg.branch_channels)
        self.transition1 = _make_transition([cfg.layer1_channels], chans[:2], m)
        self.stage2, pre = self._make_stage(2, cfg.stage_modules[0], chans[:2], chans[:2])
        self.transition2 = _make_transition(pre, chans[:3], m)
        self.stage3, pre = self._make_stage(3, cfg.stage_modules[1], chans[:3], chans[:3])
        self.transition3 = _make_transition(pre, chans[:4], m)
        self.stage4, pre = self._make_stage(
            4, cfg.stage_modules[2], chans[:4], chans[:4], multi_scale_output=False
        )
        k = cfg.final_conv_kernel
        self.final_layer = nn.Conv2d(pre[0], num_joints, kernel_size=k, stride=1, padding=1 if k == 3 else 0)

    def _make_stage(
        self,
        branches: int,
        modules: int,
        inchannels: list[int],
        channels: list[int],
        multi_scale_output: bool = True,
    ) -> tuple[nn.Sequential, list[int]]:
        mods = []
        for i in range(modules):
            mso = multi_scale_output or i != modules - 1
            mod = HighResolutionModule(
                branches, self.config.stage_blocks, inchannels, channels, mso, self.config.bn_momentum
            )
            mods.append(mod)
            inchannels = mod.num_inchannels
        return nn.Sequential(*mods), inchannels

    @staticmethod
    def _transition(layers: nn.ModuleList, ys: list[Tensor]) -> list[Tensor]:
        # New (lower-resolution) branches grow from the lowest-resolution output, as canonically.
        out = []
        for i, t in enumerate(layers):
            if t is None:
                out.append(ys[i])
            else:
                out.append(t(ys[-1] if i >= len(ys) else ys[i]))
        return out

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The highest-resolution (1/4 scale) feature after each of the four stages: F[1..4]."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        f1 = self.layer1(x)
        ys = self.stage2(self._transition(self.transition1, [f1]))
        f2 = ys[0]
        ys = self.stage3(self._transition(self.transition2, ys))
        f3 = ys[0]
        ys = self.stage4(self._transition(self.transition3, ys))
        f4 = ys[0]
        return [f1, f2, f3, f4]

    def forward(self, x: Tensor) -> Tensor:
        return self.final_layer(self.forward_features(x)[3])


def hrnet_state_dict_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Key -> shape listing (the format of the shared reference JSON files)."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


__all__ = [
    "BasicBlock",
    "Bottleneck",
    "HRNet",
    "HighResolutionModule",
    "hrnet_state_dict_shapes",
    "make_blocks",
]
