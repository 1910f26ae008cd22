"""The one place the TemporalDiff contract is written down.

The ONNX rewrite (``tdmi.export.fuse_temporal_diff``) emits nodes described here, the TensorRT
plugin (``tdmi.plugins.trt_plugin``) registers under these names, and the CPU reference below is
what both are checked against.

Semantics: input ``x`` is one stage feature of ``T`` frames per clip, laid out ``[B*T, C, h, w]``
(frame-major inside each clip, as the backbone runs them). Output ``y`` is ``[B, (T-1)*C, h, w]``
with ``y[b, k*C + c] = x[b*T + k + 1, c] - x[b*T + k, c]`` for ``k = 0 .. T-2``.

What the ONNX node must look like for the TensorRT ONNX parser (onnx-tensorrt
``FallbackPluginImporter``, TensorRT >= 10.9; checked against its source) to map it to the plugin
registered by :func:`tdmi.plugins.trt_plugin.register_plugins`:

* ``op_type`` = ``"TemporalDiff"``: the parser looks the plugin creator up by the op type as the
  plugin *name*.
* attribute ``plugin_namespace`` (STRING) = ``"tdmi"``: the namespace the parser asks for first;
  only if no creator matches does it fall back to the node's ``domain``. The node carries both
  (``domain = "tdmi"`` as well), so either lookup finds it.
* attribute ``plugin_version`` (STRING) = ``"1"``: the parser's default is also ``"1"`` and Python
  (QDP) plugin creators are always version ``"1"``; it is written explicitly for readability.
* attribute ``num_frames`` (INT) = ``T``: the only plugin field. The parser forwards exactly the
  attributes the creator declares (the ``@trtp.register`` arguments), so the bookkeeping
  attributes above never reach the plugin.
* attribute ``aot`` (INT) = ``1``: a node-level request for ``QuickPluginCreationRequest.STRICT_AOT``
  so the engine embeds the PTX kernel and needs no Python at run time (``0`` would force the JIT
  path, which this plugin does not define).
* one input ``[B*T, C, h, w]`` and one output ``[B, (T-1)*C, h, w]``, FP32 or FP16, same dtype.
* the model must import the ``tdmi`` domain (``opset_import`` entry with ``domain_version``);
  ONNX Runtime cannot run the node, so checks on the rewritten graph go through TensorRT or
  :func:`temporal_diff_reference`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx


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
    # Added after reading onnx-tensorrt's FallbackPluginImporter: the namespace is looked up from
    # this STRING attribute first (the domain is only the fallback), the version from the next.
    plugin_namespace_attr: str = "plugin_namespace"
    plugin_version_attr: str = "plugin_version"
    # Element types the kernel has entry points for (ONNX TensorProto names).
    supported_dtypes: tuple[str, ...] = ("FLOAT", "FLOAT16")

    @property
    def plugin_id(self) -> str:
        """The ``namespace::name`` id ``tensorrt.plugin`` registers under."""
        return f"{self.domain}::{self.op_type}"


SPEC = TemporalDiffSpec()


def _check_num_frames(num_frames: int) -> None:
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)):
        raise TypeError(f"num_frames must be an int, got {type(num_frames).__name__}")
    if num_frames < 2:
        raise ValueError(f"TemporalDiff needs num_frames >= 2, got {num_frames}")


def output_shape(input_shape: Sequence[int], num_frames: int) -> tuple[int, int, int, int]:
    """``[B*T, C, h, w] -> [B, (T-1)*C, h, w]``, with the same checks as the plugin."""
    _check_num_frames(num_frames)
    if len(input_shape) != 4:
        raise ValueError(f"TemporalDiff expects [B*T, C, h, w], got shape {tuple(input_shape)}")
    bt, c, h, w = (int(d) for d in input_shape)
    if bt % num_frames:
        raise ValueError(f"leading dim {bt} is not a multiple of num_frames={num_frames}")
    return bt // num_frames, (num_frames - 1) * c, h, w


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


def node_attributes(num_frames: int, aot: bool = True) -> dict[str, int | str]:
    """Attributes of a TemporalDiff node, in the types the TensorRT ONNX parser expects.

    Ints become ONNX INT attributes and strings STRING attributes with both ``onnx.helper`` and
    ``onnx_graphsurgeon``; ``aot`` is an int (ONNX has no bool attribute).
    """
    _check_num_frames(num_frames)
    return {
        SPEC.num_frames_attr: int(num_frames),
        SPEC.plugin_namespace_attr: SPEC.domain,
        SPEC.plugin_version_attr: SPEC.plugin_version,
        SPEC.aot_attr: 1 if aot else 0,
    }


def make_node(
    input_name: str, output_name: str, num_frames: int, name: str | None = None, aot: bool = True
) -> onnx.NodeProto:
    """An ``onnx.NodeProto`` for one TemporalDiff (the model must also import ``SPEC.domain``)."""
    from onnx import helper

    attrs: dict[str, Any] = node_attributes(num_frames, aot=aot)
    return helper.make_node(
        SPEC.op_type,
        inputs=[input_name],
        outputs=[output_name],
        name=name or f"{SPEC.op_type}_{output_name}",
        domain=SPEC.domain,
        **attrs,
    )


def opset_import() -> onnx.OperatorSetIdProto:
    """The ``opset_import`` entry a model containing TemporalDiff nodes needs."""
    from onnx import helper

    return helper.make_opsetid(SPEC.domain, SPEC.domain_version)
