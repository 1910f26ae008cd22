"""Typed, JSON-serialisable model configuration and the named presets.

Every choice the paper leaves open is a field here, so a user holding official weights can match
them, and so every exported artifact can say exactly which network it contains.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from tdmi.errors import ConfigError
from tdmi.utils import json_object, reject_unknown_fields


@dataclass(frozen=True)
class HRNetConfig:
    """HRNet pose backbone (canonical deep-high-resolution-net layout)."""

    width: int = 48  # channels of the highest-resolution branch (W); branch i has W * 2**i
    stem_channels: int = 64
    layer1_planes: int = 64  # bottleneck planes; layer1 outputs 4x this (256)
    layer1_blocks: int = 4
    stage_modules: tuple[int, int, int] = (1, 4, 3)  # HighResolutionModules in stages 2, 3, 4
    stage_blocks: int = 4  # BasicBlocks per branch in every module
    final_conv_kernel: int = 1
    bn_momentum: float = 0.1

    @property
    def branch_channels(self) -> tuple[int, int, int, int]:
        w = self.width
        return (w, 2 * w, 4 * w, 8 * w)

    @property
    def layer1_channels(self) -> int:
        return self.layer1_planes * 4


@dataclass(frozen=True)
class TDMIConfig:
    """The whole TDMI network, pre/post-processing constants included."""

    name: str = "custom"
    backbone: HRNetConfig = field(default_factory=HRNetConfig)
    num_frames: int = 3  # T = 2*delta + 1, key frame in the middle
    num_joints: int = 17
    input_size: tuple[int, int] = (384, 288)  # (H, W)
    sigma: float = 2.0  # Gaussian target sigma at heatmap resolution
    # Temporal difference encoder
    stage_channels: tuple[int, int, int, int] | None = None  # C_j of F[j]; None -> from the backbone
    tde_blocks: tuple[int, int, int, int] = (3, 3, 2, 2)  # residual blocks N_j per stage
    motion_channels: int | None = None  # C_m; None -> backbone width
    dcn_kernel: int = 3
    dcn_offset_groups: int = 1
    # "native": torchvision deform_conv2d (ONNX DeformConv); "decomposed": GridSample + Conv, which
    # every runtime runs without a plugin (TensorRT-RTX needs it). Same numbers, same weights.
    deform_conv: str = "native"
    cascade_kernel: int = 3
    # Representation disentanglement
    gate_reduction: int = 4  # MLP hidden = C_m // gate_reduction
    # Heatmap head
    head_channels: int | None = None  # None -> backbone width
    head_blocks: int = 2
    # Training
    mi_hidden: int = 64  # vCLUB variational network hidden size
    mi_weight: float = 1e-3
    bbox_padding: float = 1.25

    def __post_init__(self) -> None:
        self.validate()

    # -- derived values -------------------------------------------------------------------------
    @property
    def key_frame(self) -> int:
        return self.num_frames // 2

    @property
    def heatmap_size(self) -> tuple[int, int]:
        return (self.input_size[0] // 4, self.input_size[1] // 4)

    @property
    def resolved_stage_channels(self) -> tuple[int, int, int, int]:
        if self.stage_channels is not None:
            return self.stage_channels
        b = self.backbone
        return (b.layer1_channels, b.width, b.width, b.width)

    @property
    def resolved_motion_channels(self) -> int:
        return self.motion_channels or self.backbone.width

    @property
    def resolved_head_channels(self) -> int:
        return self.head_channels or self.backbone.width

    @property
    def aspect_ratio(self) -> float:
        return self.input_size[1] / self.input_size[0]

    def validate(self) -> None:
        h, w = self.input_size
        if self.num_frames < 2:
            raise ConfigError(
                f"num_frames must be >= 2 (temporal differences need two frames), got {self.num_frames}"
            )
        if h % 32 or w % 32:
            raise ConfigError(
                f"input_size {self.input_size} must be multiples of 32 (HRNet downsamples by 32)"
            )
        expected = (
            self.backbone.layer1_channels,
            self.backbone.width,
            self.backbone.width,
            self.backbone.width,
        )
        if self.stage_channels is not None and tuple(self.stage_channels) != expected:
            raise ConfigError(
                f"stage_channels {tuple(self.stage_channels)} contradict the backbone, which gives {expected}"
            )
        if len(self.tde_blocks) != 4 or min(self.tde_blocks) < 1:
            raise ConfigError(f"tde_blocks needs 4 entries >= 1, got {self.tde_blocks}")
        if self.resolved_motion_channels // self.gate_reduction < 1:
            raise ConfigError("gate_reduction is larger than the motion channels")
        if self.deform_conv not in ("native", "decomposed"):
            raise ConfigError(f"deform_conv must be 'native' or 'decomposed', got {self.deform_conv!r}")
        if self.dcn_kernel % 2 != 1 or self.cascade_kernel % 2 != 1:
            raise ConfigError("dcn_kernel and cascade_kernel must be odd")

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TDMIConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a model config must be a JSON object, got {type(data).__name__}")
        reject_unknown_fields(cls, data, "model config")
        check_field_types(cls, data)
        kwargs = dict(data)
        bb = kwargs.get("backbone", {})
        if isinstance(bb, dict):
            reject_unknown_fields(HRNetConfig, bb, "backbone config")
            check_field_types(HRNetConfig, bb, prefix="backbone.")
            bb = dict(bb)
            if "stage_modules" in bb:
                bb["stage_modules"] = tuple(bb["stage_modules"])
            kwargs["backbone"] = HRNetConfig(**bb)
        for key in ("input_size", "stage_channels", "tde_blocks"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ConfigError(f"invalid model config: {e}") from None

    @classmethod
    def from_json(cls, text: str) -> TDMIConfig:
        return cls.from_dict(json_object(text, "model config"))

    def replace(self, **changes: Any) -> TDMIConfig:
        return dataclasses.replace(self, **changes)


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        item = _type_name(args[0]).split(" ", 1)[-1] + "s"
        return (
            f"a list of {item}" if len(args) == 2 and args[1] is Ellipsis else f"a list of {len(args)} {item}"
        )
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "an object"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(hint, str(hint))


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return isinstance(value, (dict, hint))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_field_types(cls: type, data: dict[str, Any], prefix: str = "") -> None:
    """JSON values must have the dataclass field's type: ``"seventeen"`` is not a joint count."""
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        hint = hints.get(key)
        if hint is not None and not _fits(value, hint):
            raise ConfigError(
                f"model config field {prefix}{key} must be {_type_name(hint)}, got {json.dumps(value)}"
            )


W48 = HRNetConfig(width=48)
W32 = HRNetConfig(width=32)
# Tiny: same topology (all four stages, every branch), few channels and blocks: CPU tests.
TINY = HRNetConfig(
    width=8, stem_channels=16, layer1_planes=8, layer1_blocks=1, stage_modules=(1, 1, 1), stage_blocks=1
)

PRESETS: dict[str, TDMIConfig] = {
    "tdmi-w48-384x288": TDMIConfig(
        name="tdmi-w48-384x288", backbone=W48, num_frames=3, input_size=(384, 288)
    ),
    "tdmi-w48-384x288-t5": TDMIConfig(
        name="tdmi-w48-384x288-t5", backbone=W48, num_frames=5, input_size=(384, 288)
    ),
    "tdmi-w32-256x192": TDMIConfig(
        name="tdmi-w32-256x192", backbone=W32, num_frames=3, input_size=(256, 192)
    ),
    "tdmi-tiny": TDMIConfig(
        name="tdmi-tiny",
        backbone=TINY,
        num_frames=3,
        input_size=(128, 96),
        tde_blocks=(1, 1, 1, 1),
        head_blocks=1,
        gate_reduction=2,
        mi_hidden=16,
    ),
}

DEFAULT_PRESET = "tdmi-w48-384x288"


def get_preset(name: str) -> TDMIConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def resolve_config(config: TDMIConfig | str) -> TDMIConfig:
    """Accept a config object, a preset name, or a path to a JSON config file."""
    if isinstance(config, TDMIConfig):
        return config
    if config in PRESETS:
        return PRESETS[config]
    if str(config).endswith(".json"):
        from pathlib import Path

        p = Path(config)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
        try:
            return TDMIConfig.from_json(p.read_text())
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None
    return get_preset(str(config))
