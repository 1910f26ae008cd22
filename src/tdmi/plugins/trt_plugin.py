"""TensorRT registration of TemporalDiff as a quickly deployable (``tensorrt.plugin``) AOT plugin.

``register_plugins()`` defines, under ``SPEC.plugin_id`` (``"tdmi::TemporalDiff"``):

* the shape/type descriptor: ``[B*T, C, h, w] -> [B, (T-1)*C, h, w]`` from symbolic shapes and the
  ``num_frames`` attribute, output dtype = input dtype, FP32/FP16 only;
* an AOT implementation returning the shipped PTX (``tdmi.plugins.build``) for the GPU the engine
  is built on, its entry name, the launch grid and the int32 scalar arguments, all computed by
  ``tdmi.plugins.launch_params`` (the numbers the cuda-python launcher uses too). The kernel is
  then embedded in the engine: running it needs neither Python nor this package;
* the type/format combinations: input and output both FP32 or both FP16, LINEAR.

There is deliberately no JIT (``@trtp.impl``) implementation, so a plugin created without an
explicit request also resolves to AOT. The ONNX node contract is documented in
``tdmi.plugins.temporal_diff``.

Note: no ``from __future__ import annotations`` here. ``tensorrt.plugin`` validates the decorated
functions' annotations with ``inspect.signature`` and needs real classes, not strings.
"""

import threading
from typing import Any

from tdmi.errors import BackendUnavailableError
from tdmi.plugins import launch_params, ptx
from tdmi.plugins.availability import TENSORRT_MISSING, compute_capability, tensorrt_available
from tdmi.plugins.temporal_diff import SPEC

_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"registered": False, "ptx_arch": None}
_PTX_CACHE: dict[int, str] = {}


def _current_device() -> int:
    """The CUDA device TensorRT builds for: the runtime API's current device."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        return 0
    err, device = runtime.cudaGetDevice()
    return int(device) if err == runtime.cudaError_t.cudaSuccess else 0


def aot_ptx_arch() -> int:
    """The virtual arch whose PTX goes into engines built now (see :func:`register_plugins`)."""
    forced = _STATE["ptx_arch"]
    if forced is not None:
        return int(forced)
    return ptx.select_arch(compute_capability(_current_device()))


def _ptx_text(arch: int) -> str:
    if arch not in _PTX_CACHE:
        _PTX_CACHE[arch] = ptx.read_ptx(ptx.ptx_path(arch))
    return _PTX_CACHE[arch]


def _already_defined(trtp: Any) -> bool:
    namespace = getattr(trtp.op, SPEC.domain, None)
    return namespace is not None and hasattr(namespace, SPEC.op_type)


def register_plugins(ptx_arch: int | None = None) -> None:
    """Register ``tdmi::TemporalDiff`` with TensorRT; safe to call any number of times.

    ``ptx_arch`` pins the PTX embedded in engines (a shipped arch; only ``75`` ships, which JITs on
    every GPU); by default the highest shipped arch <= the build GPU's compute capability.
    """
    if ptx_arch is not None:
        ptx.ptx_path(ptx_arch)  # fail now, not inside a TensorRT callback
    with _LOCK:
        _STATE["ptx_arch"] = ptx_arch
        if _STATE["registered"]:
            return
        availability = tensorrt_available()
        if not availability:
            raise BackendUnavailableError(availability.reason or TENSORRT_MISSING)
        import tensorrt as trt
        import tensorrt.plugin as trtp

        if _already_defined(trtp):  # e.g. this module was reloaded; TensorRT keeps its registry
            _STATE["registered"] = True
            return
        _define(trt, trtp)
        _STATE["registered"] = True


def _define(trt: Any, trtp: Any) -> None:
    supported = {trt.float32: "float32", trt.float16: "float16"}

    @trtp.register(SPEC.plugin_id)
    def temporal_diff_desc(x: trtp.TensorDesc, num_frames: int) -> trtp.TensorDesc:
        if num_frames < 2:
            raise ValueError(f"{SPEC.op_type}: num_frames must be >= 2, got {num_frames}")
        if x.dtype not in supported:
            raise ValueError(f"{SPEC.op_type}: FP32/FP16 input only, got {x.dtype}")
        if x.ndim != 4:
            raise ValueError(f"{SPEC.op_type}: input must be [B*T, C, h, w], got rank {x.ndim}")
        bt, c, h, w = x.shape_expr
        if not bt.is_fake and bt.is_constant and bt.constant_value() % num_frames:
            raise ValueError(f"{SPEC.op_type}: B*T={bt.constant_value()} not divisible by T={num_frames}")
        return trtp.from_shape_expr((bt // num_frames, c * (num_frames - 1), h, w), dtype=x.dtype)

    @trtp.autotune(SPEC.plugin_id)
    def temporal_diff_autotune(
        x: trtp.TensorDesc, num_frames: int, outputs: tuple[trtp.TensorDesc]
    ) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16", "LINEAR")]

    @trtp.aot_impl(SPEC.plugin_id)
    def temporal_diff_aot(
        x: trtp.TensorDesc, num_frames: int, outputs: tuple[trtp.TensorDesc], tactic: int
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        dtype = supported[x.dtype]
        vec = launch_params.vector_width(dtype)
        bt, c, h, w = x.shape_expr
        num_clips = bt // num_frames
        plane = c * h * w

        params = trtp.KernelLaunchParams()
        params.grid_x = launch_params.grid_size(num_clips, plane, vec, trtp.cdiv)
        params.block_x = launch_params.BLOCK_SIZE
        params.shared_mem = 0

        # Kernel ABI: (x, num_clips, num_frames, plane, y); TensorRT passes inputs, these, outputs.
        scalars = trtp.SymIntExprs(3)
        scalars[0] = trtp.SymInt32(num_clips)
        scalars[1] = trtp.SymInt32(num_frames)
        scalars[2] = trtp.SymInt32(plane)
        return launch_params.kernel_name(dtype), _ptx_text(aot_ptx_arch()), params, scalars

    del temporal_diff_desc, temporal_diff_autotune, temporal_diff_aot  # held by TensorRT's registry


def add_temporal_diff(network: Any, x: Any, num_frames: int) -> Any:
    """Add a TemporalDiff AOT plugin layer to a TensorRT network (without going through ONNX)."""
    register_plugins()
    import tensorrt as trt
    import tensorrt.plugin as trtp

    op = getattr(getattr(trtp.op, SPEC.domain), SPEC.op_type)
    factory = op(x, num_frames=int(num_frames))
    inputs, shape_inputs, plugin = factory(trt.QuickPluginCreationRequest.STRICT_AOT)
    return network.add_plugin_v3(inputs, shape_inputs, plugin)
