"""The PyTorch reference: HRNet backbone, TDMI network, config presets, checkpoints, losses."""

from tdmi.model.checkpoint import load_checkpoint, load_hrnet_weights, save_checkpoint
from tdmi.model.hrnet import HRNet
from tdmi.model.losses import VCLUB, JointsMSELoss, TDMILoss, make_loss, train_step
from tdmi.model.tdmi import TDMI, TDMITrainOutput
from tdmi.spec.config import DEFAULT_PRESET, PRESETS, HRNetConfig, TDMIConfig, get_preset, resolve_config

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "TDMI",
    "VCLUB",
    "HRNet",
    "HRNetConfig",
    "JointsMSELoss",
    "TDMIConfig",
    "TDMILoss",
    "TDMITrainOutput",
    "get_preset",
    "load_checkpoint",
    "load_hrnet_weights",
    "make_loss",
    "resolve_config",
    "save_checkpoint",
    "train_step",
]
