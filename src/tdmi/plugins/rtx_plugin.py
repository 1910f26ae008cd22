"""TemporalDiff for TensorRT-RTX: an IPluginV3 with an ``IPluginCreatorV3One`` creator.

TensorRT-RTX has no ``tensorrt.plugin`` (decorator/AOT) module and no ``add_plugin_v3`` on its
Python network; its ONNX parser imports IPluginV3 plugins registered through a V3 creator, looked
up by the node's op type (name), ``plugin_namespace`` and ``plugin_version`` (see
:mod:`tdmi.plugins.temporal_diff`). The creator declares one field, ``num_frames``.

Shape and type rules are the AOT plugin's: ``[B*T, C, h, w] -> [B, (T-1)*C, h, w]``, FP32 or FP16,
output dtype = input dtype, LINEAR. ``enqueue`` launches the same shipped PTX through cuda-python
(:func:`tdmi.plugins.launch.launch`) with the launch arithmetic of
:func:`tdmi.plugins.launch_params.launch_config`, which the AOT path also uses. Unlike the AOT
plugin the kernel is not embedded in the engine: a process that runs the engine registers this
plugin first (the TensorRT backend does). Building needs no GPU (enqueue is not called).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from tdmi.plugins.temporal_diff import SPEC

_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"creator": None}


def _num_frames(fields: Any) -> int:
    for f in fields:
        if f.name == SPEC.num_frames_attr:
            value = int(np.asarray(f.data).ravel()[0])
            if value < 2:
                raise ValueError(f"{SPEC.op_type}: num_frames must be >= 2, got {value}")
            return value
    raise ValueError(f"{SPEC.op_type}: the node has no '{SPEC.num_frames_attr}' attribute")


def _define(trt: Any) -> tuple[type, type]:
    """The plugin and creator classes, bound to one bindings module (they subclass its types)."""
    plugin = _define_plugin(trt)
    return plugin, _define_creator(trt, plugin)


def _output_dims(trt: Any, x: Any, builder: Any, t: int) -> Any:
    """``[B*T, C, h, w] -> [B, (T-1)*C, h, w]`` as TensorRT dimension expressions."""
    if len(x) != 4:
        raise ValueError(f"{SPEC.op_type}: input must be [B*T, C, h, w], got rank {len(x)}")
    out = trt.DimsExprs(x)
    op = trt.DimensionOperation
    out[0] = builder.operation(op.FLOOR_DIV, x[0], builder.constant(t))
    out[1] = builder.operation(op.PROD, x[1], builder.constant(t - 1))
    return out


def _launch(dims: Any, dtype: str, src: int, dst: int, num_frames: int, stream: int) -> None:
    """The shipped PTX kernel on ``stream``, with the launch arithmetic the AOT plugin uses too."""
    from tdmi.plugins import launch, launch_params

    shape = tuple(int(d) for d in dims)
    config = launch_params.launch_config(shape, num_frames, dtype)
    launch.launch(src, dst, config, device=_current_device(), stream=stream)


def _define_creator(trt: Any, plugin: type) -> type:
    """The V3 creator TensorRT-RTX's parser finds by name, namespace and version; it declares
    ``num_frames`` and builds ``plugin`` from the node's value."""

    class TemporalDiffCreator(trt.IPluginCreatorV3One):
        def __init__(self) -> None:
            trt.IPluginCreatorV3One.__init__(self)
            self.name = SPEC.op_type
            self.plugin_namespace = SPEC.domain
            self.plugin_version = SPEC.plugin_version
            self.field_names = trt.PluginFieldCollection(
                [
                    trt.PluginField(
                        SPEC.num_frames_attr, np.array([], dtype=np.int32), trt.PluginFieldType.INT32
                    )
                ]
            )

        def create_plugin(self, name: str, fields: Any, phase: Any) -> Any:
            return plugin(_num_frames(fields))

    return TemporalDiffCreator


def _define_plugin(trt: Any) -> type:
    """The IPluginV3 class (core, build and runtime in one object, as TensorRT's Python samples do)."""
    float_types = {trt.DataType.FLOAT: "float32", trt.DataType.HALF: "float16"}

    bases = (trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime)

    class TemporalDiffPlugin(*bases):  # type: ignore[misc]  # bases are values of the bindings module
        def __init__(self, num_frames: int) -> None:
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.num_frames = int(num_frames)
            self.num_outputs = 1
            self.plugin_namespace = SPEC.domain
            self.plugin_name = SPEC.op_type
            self.plugin_version = SPEC.plugin_version
            self.timing_cache_id = ""

        def get_capability_interface(self, type: Any) -> Any:
            return self

        def clone(self) -> Any:
            return TemporalDiffPlugin(self.num_frames)

        def get_fields_to_serialize(self) -> Any:
            data = np.array([self.num_frames], dtype=np.int32)
            return trt.PluginFieldCollection(
                [trt.PluginField(SPEC.num_frames_attr, data, trt.PluginFieldType.INT32)]
            )

        def get_output_data_types(self, input_types: Any) -> list[Any]:
            return [input_types[0]]

        def get_output_shapes(self, inputs: Any, shape_inputs: Any, builder: Any) -> list[Any]:
            return [_output_dims(trt, inputs[0], builder, self.num_frames)]

        def supports_format_combination(self, pos: int, in_out: Any, num_inputs: int) -> bool:
            desc = in_out[pos].desc
            if desc.format != trt.TensorFormat.LINEAR:
                return False
            if pos == 0:
                return desc.type in float_types
            return desc.type == in_out[0].desc.type

        def configure_plugin(self, inputs: Any, outputs: Any) -> None:
            return None

        def on_shape_change(self, inputs: Any, outputs: Any) -> None:
            return None

        def get_valid_tactics(self) -> list[int]:
            return []

        def set_tactic(self, tactic: int) -> None:
            return None

        def get_workspace_size(self, inputs: Any, outputs: Any) -> int:
            return 0

        def attach_to_context(self, context: Any) -> Any:
            return self.clone()

        def enqueue(
            self, input_desc: Any, output_desc: Any, inputs: Any, outputs: Any, workspace: Any, stream: Any
        ) -> None:
            dtype = float_types[input_desc[0].type]
            _launch(input_desc[0].dims, dtype, int(inputs[0]), int(outputs[0]), self.num_frames, int(stream))

    return TemporalDiffPlugin


def _current_device() -> int:
    from tdmi.plugins.trt_plugin import _current_device as current

    return current()


def register_rtx_plugins() -> Any:
    """Register ``tdmi::TemporalDiff`` with TensorRT-RTX (idempotent); returns the creator.

    First makes ``libtensorrt_rtx.so`` resolvable (see :mod:`tdmi.plugins.rtx`), so creating the
    plugin cannot abort the process.
    """
    from tdmi.plugins.rtx import ensure_library_name, import_rtx

    trt = import_rtx()
    with _LOCK:
        if _STATE["creator"] is not None:
            return _STATE["creator"]
        ensure_library_name()
        _, creator_cls = _define(trt)
        creator = creator_cls()
        registry = trt.get_plugin_registry()
        if not registry.register_creator(creator, SPEC.domain):
            from tdmi.errors import BackendUnavailableError

            raise BackendUnavailableError(
                f"TensorRT-RTX refused to register the {SPEC.plugin_id} plugin creator "
                "(another creator with that name and namespace is registered)"
            )
        _STATE["creator"] = creator  # TensorRT holds a raw pointer: keep the Python object alive
        return creator
