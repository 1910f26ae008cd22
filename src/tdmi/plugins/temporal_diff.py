"""The one place the TemporalDiff contract is written down.

The ONNX rewrite (``tdmi.export.fuse_temporal_diff``) emits nodes described here, the TensorRT
plugin (``tdmi.plugins.trt_plugin``) registers under these names, and the CPU reference below is
what both are checked against.

Semantics: input ``x`` is one stage feature of ``T`` frames per clip, laid out ``[B*T, C, h, w]``
(frame-major inside each clip, as the backbone runs them). Output ``y`` is ``[B, (T-1)*C, h, w]``
with ``y[b, k*C + c] = x[b*T + k + 1, c] - x[b*T + k, c]`` for ``k = 0 .. T-2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TemporalDiffSpec:
    op_type: str = "TemporalDiff"  # ONNX op type == TensorRT plugin name
    domain: str = "tdmi"  # ONNX domain == TensorRT plugin namespace
    plugin_version: str = "1"
    domain_version: int = 1  # opset version of the ``tdmi`` domain in the ONNX file
    num_frames_attr: str = "num_frames"
    # The TensorRT ONNX parser picks the AOT implementation of a Python plugin when the node
    # carries this integer attribute set to 1 (TensorRT >= 10.9).
    aot_attr: str = "aot"
    input_name_hint: str = "feature"
    output_name_hint: str = "diff"


SPEC = TemporalDiffSpec()


def temporal_diff_reference(x: np.ndarray, num_frames: int) -> np.ndarray:
    """CPU reference of TemporalDiff (numpy), in the input's dtype."""
    if x.ndim != 4:
        raise ValueError(f"TemporalDiff expects [B*T, C, h, w], got shape {x.shape}")
    if num_frames < 2:
        raise ValueError(f"TemporalDiff needs num_frames >= 2, got {num_frames}")
    bt, c, h, w = x.shape
    if bt % num_frames:
        raise ValueError(f"leading dim {bt} is not a multiple of num_frames={num_frames}")
    x5 = x.reshape(bt // num_frames, num_frames, c, h, w)
    return (x5[:, 1:] - x5[:, :-1]).reshape(bt // num_frames, (num_frames - 1) * c, h, w)
