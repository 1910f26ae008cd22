"""The model spec, free of torch and onnx: configs and presets, joint names, input normalisation.

Both sides of an artifact (``tdmi.export`` writes it, ``tdmi.runtime`` reads it) need these, so
they sit below both and import nothing heavier than numpy.
"""

from tdmi.spec.config import DEFAULT_PRESET, PRESETS, HRNetConfig, TDMIConfig, get_preset, resolve_config

__all__ = ["DEFAULT_PRESET", "PRESETS", "HRNetConfig", "TDMIConfig", "get_preset", "resolve_config"]
