"""Library errors: each one carries a message a user can act on.

The CLI prints ``str(error)`` as one line and exits non-zero, so messages must say what went
wrong *and* what to do about it, without relying on a traceback.
"""

from __future__ import annotations


class TdmiError(Exception):
    """Base class for every error the toolkit raises on purpose."""


class ConfigError(TdmiError):
    """An invalid or unknown model configuration / preset."""


class UsageError(ConfigError):
    """A command-line option value that cannot work (the CLI exits 2, as for an unknown option)."""


class CheckpointError(TdmiError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


class ExportError(TdmiError):
    """ONNX export, conversion or rewrite failed."""


class DataError(TdmiError):
    """Input data (PoseTrack folders, predictions, clips, boxes) is missing or malformed."""


class BackendUnavailableError(TdmiError):
    """A runtime (TensorRT, CUDA, ONNX Runtime feature) this request needs is not installed."""


class EngineError(TdmiError):
    """A TensorRT engine or its sidecar is unusable on this machine."""


class NonFiniteOutputWarning(UserWarning):
    """A backend returned NaN/Inf heatmaps for finite input (FP16 overflow, broken weights)."""


class TrainError(TdmiError):
    """A training run that cannot start, continue or finish (bad resume folder, NaN loss, OOM)."""
