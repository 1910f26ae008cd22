"""TensorRT predictor: engine + sidecar, cuda-python buffers and stream, optional CUDA graphs.

Written against the TensorRT 11 Python API (``deserialize_cuda_engine``, name-based I/O,
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``), which 10.x shares.
The sidecar is read and checked against this machine *before* TensorRT sees the engine bytes.
It also says which runtime reads the engine: TensorRT, or TensorRT-RTX (same API; its kernels
are compiled for the GPU on first use and kept in a runtime cache file next to the engine, so only
the first run of an engine on a GPU pays for it).
numpy clips go through device buffers this predictor owns (sized for the profile's max batch);
CUDA torch tensors are bound directly (``data_ptr``) on torch's current stream, no host copy.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from tdmi.artifacts.sidecar import (
    INPUT_NAME,
    TARGET_NAMES,
    BuildEnvironment,
    check_environment,
    check_plugin,
    load_sidecar,
)
from tdmi.errors import EngineError
from tdmi.runtime.base import Predictor

_NP_DTYPES = {"float32": np.float32, "float16": np.float16}


def _cuda(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple, raising on any error."""
    from cuda.bindings import runtime as cudart

    if not isinstance(result, tuple):
        result = (result,)
    err = result[0]
    if err != cudart.cudaError_t.cudaSuccess:
        name = getattr(err, "name", str(err))
        raise EngineError(f"CUDA call {what} failed: {name}")
    if len(result) == 1:
        return None
    return result[1] if len(result) == 2 else result[1:]


def _device_index(device: str | None) -> int:
    if device in (None, "auto", "cuda"):
        return 0
    text = str(device)
    if not text.startswith("cuda"):
        raise EngineError(f"a TensorRT engine runs on a CUDA device, not {device!r}: use 'cuda' or 'cuda:N'")
    return int(text.split(":", 1)[1]) if ":" in text else 0


def runtime_cache_path(engine: Path) -> Path:
    """``model.engine`` -> ``model.engine.rtcache`` (TensorRT-RTX's JIT-compiled kernels)."""
    return engine.with_name(engine.name + ".rtcache")


def check_engine_file(
    path: Path, environment: BuildEnvironment | None, target: str | None = None
) -> tuple[Any, list[str]]:
    """Sidecar + environment checks that need no TensorRT: (sidecar, warnings).

    ``target`` (``tensorrt``/``tensorrt-rtx``), when given, must be the runtime the engine was
    built for: the two cannot read each other's engines.
    """
    if not path.is_file():
        raise EngineError(f"engine file {path} not found")
    sidecar = load_sidecar(path)
    if target is not None and target != sidecar.target:
        built, asked = TARGET_NAMES[sidecar.target], TARGET_NAMES.get(target, target)
        extra = "rtx" if sidecar.target == "tensorrt-rtx" else "trt"
        raise EngineError(
            f"{path.name} is a {built} engine (its sidecar says so) and cannot be opened with {asked}: "
            f"run it with {built} (pip install 'tdmi-deploy[{extra}]') or rebuild it with "
            f"tdmi-build-engine --target {target}"
        )
    warnings: list[str] = []
    if environment is not None:
        warnings += check_environment(sidecar, environment, path.name)
    return sidecar, warnings


class TensorRTPredictor(Predictor):
    backend = "tensorrt"

    def __init__(
        self,
        path: str | Path,
        device: str | None = None,
        *,
        cuda_graph: bool = False,
        environment: BuildEnvironment | None = None,
        target: str | None = None,
        runtime_cache: str | Path | None = None,
    ) -> None:
        path = Path(path)
        # 1. What the engine needs, from the sidecar, before anything touches TensorRT.
        sidecar, self.warnings = check_engine_file(path, environment, target)
        from tdmi.plugins.availability import probe_environment, require_tensorrt

        rtx = sidecar.target == "tensorrt-rtx"
        if rtx:
            from tdmi.plugins.availability import cuda_gpu_available
            from tdmi.plugins.rtx import import_rtx

            trt = import_rtx()
            cuda_gpu_available().require()  # RTX builds anywhere, but runs on a GPU only
        else:
            trt = require_tensorrt()
        if environment is None:
            self.warnings += check_environment(sidecar, probe_environment(trt), path.name)
        from cuda.bindings import runtime as cudart

        self._cudart = cudart
        self._trt = trt
        index = _device_index(device)
        _cuda(cudart.cudaSetDevice(index), "cudaSetDevice")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sidecar.engine_sha256:
            raise EngineError(
                f"{path} does not match its sidecar (sha256 differs): the engine was replaced without its "
                f"{path.name}.json; rebuild both with tdmi-build-engine"
            )
        # 2. Plugins: TensorRT's own (DeformConv) and, when present, ours.
        self._logger = trt.Logger(trt.Logger.WARNING)
        if rtx:
            if sidecar.plugin is not None:
                from tdmi.plugins.rtx_plugin import register_rtx_plugins

                register_rtx_plugins()  # an IPluginV3 in this process runs the kernel
        else:
            trt.init_libnvinfer_plugins(self._logger, "")
        if sidecar.plugin is not None and not rtx:
            from tdmi.plugins import ptx
            from tdmi.plugins.temporal_diff import SPEC
            from tdmi.plugins.trt_plugin import aot_ptx_arch, register_plugins

            register_plugins()
            local = ptx.kernel_sha256(aot_ptx_arch())
            self.warnings += check_plugin(sidecar, SPEC.plugin_version, local, path.name)
        # 3. Deserialize and bind.
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineError(
                f"TensorRT could not deserialize {path} (see its log above); rebuild the engine"
            )
        self._runtime_cache = None
        self.runtime_cache_path: Path | None = None
        if rtx:
            self.runtime_cache_path = Path(runtime_cache) if runtime_cache else runtime_cache_path(path)
            runtime_config = self.engine.create_runtime_config()
            cache = runtime_config.create_runtime_cache()
            saved = self.runtime_cache_path
            if saved.is_file() and not cache.deserialize(saved.read_bytes()):
                self.warnings.append(
                    f"runtime cache {self.runtime_cache_path} was made for another GPU, driver or "
                    "TensorRT-RTX version: kernels are compiled again and the cache is rewritten"
                )
            runtime_config.set_runtime_cache(cache)
            self._runtime_cache = cache
            self.context = self.engine.create_execution_context(runtime_config)
        else:
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if ins != [INPUT_NAME] or len(outs) != 1:
            raise EngineError(
                f"{path} must have input {INPUT_NAME!r} and one output, has inputs {ins}, outputs {outs}"
            )
        self._out_name = outs[0]
        self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(INPUT_NAME)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self._out_name)))
        pmin, _, pmax = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
        super().__init__(
            sidecar.config(),
            precision=sidecar.precision,
            device=f"cuda:{index}",
            min_batch=int(pmin[0]),
            max_batch=int(pmax[0]),
            source=str(path),
        )
        self.sidecar = sidecar
        self.cuda_graph = cuda_graph
        self._stream = _cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
        in_bytes = self.max_batch * int(np.prod(self.input_shape)) * self._in_dtype.itemsize
        out_bytes = self.max_batch * int(np.prod(self.output_shape)) * self._out_dtype.itemsize
        self._d_in = _cuda(cudart.cudaMalloc(in_bytes), "cudaMalloc")
        self._d_out = _cuda(cudart.cudaMalloc(out_bytes), "cudaMalloc")
        self._graphs: dict[int, tuple[Any, Any]] = {}

    # -- numpy: our buffers --------------------------------------------------------------------
    def _set_shape(self, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(INPUT_NAME, shape):
            raise EngineError(
                f"TensorRT rejected input shape {shape} (profile batch {self.min_batch}..{self.max_batch})"
            )

    def _bind_own(self, batch: int) -> None:
        self._set_shape((batch, *self.input_shape))
        self.context.set_tensor_address(INPUT_NAME, int(self._d_in))
        self.context.set_tensor_address(self._out_name, int(self._d_out))

    def _enqueue(self, batch: int) -> None:
        cudart = self._cudart
        if not self.cuda_graph:
            if not self.context.execute_async_v3(int(self._stream)):
                raise EngineError("TensorRT execute_async_v3 failed (see its log)")
            return
        if batch not in self._graphs:
            # TensorRT must run once after a shape change before its work can be captured.
            if not self.context.execute_async_v3(int(self._stream)):
                raise EngineError("TensorRT execute_async_v3 failed (see its log)")
            _cuda(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
            mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            _cuda(cudart.cudaStreamBeginCapture(self._stream, mode), "cudaStreamBeginCapture")
            ok = self.context.execute_async_v3(int(self._stream))
            graph = _cuda(cudart.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
            if not ok:
                _cuda(cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")
                raise EngineError(
                    "TensorRT could not be captured into a CUDA graph: run with cuda_graph=False"
                )
            exec_graph = _cuda(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
            self._graphs[batch] = (graph, exec_graph)
        _cuda(cudart.cudaGraphLaunch(self._graphs[batch][1], self._stream), "cudaGraphLaunch")

    def _run_numpy(self, x: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        batch = int(x.shape[0])
        host_in = np.ascontiguousarray(x, dtype=self._in_dtype)
        host_out = np.empty((batch, *self.output_shape), dtype=self._out_dtype)
        self._bind_own(batch)
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda(
            cudart.cudaMemcpyAsync(self._d_in, host_in.ctypes.data, host_in.nbytes, h2d, self._stream),
            "H2D copy",
        )
        self._enqueue(batch)
        _cuda(
            cudart.cudaMemcpyAsync(host_out.ctypes.data, self._d_out, host_out.nbytes, d2h, self._stream),
            "D2H copy",
        )
        _cuda(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return host_out.astype(np.float32, copy=False)

    # -- torch CUDA tensors: bound in place ------------------------------------------------------
    def _run_torch(self, x: Any) -> Any:
        import torch

        if x.device.type != "cuda":
            return super()._run_torch(x)
        in_dtype = torch.float16 if self._in_dtype == np.float16 else torch.float32
        out_dtype = torch.float16 if self._out_dtype == np.float16 else torch.float32
        xin = x.to(in_dtype).contiguous()
        out = torch.empty((int(x.shape[0]), *self.output_shape), dtype=out_dtype, device=x.device)
        self._set_shape(tuple(int(d) for d in xin.shape))
        self.context.set_tensor_address(INPUT_NAME, xin.data_ptr())
        self.context.set_tensor_address(self._out_name, out.data_ptr())
        stream = torch.cuda.current_stream(x.device).cuda_stream
        if not self.context.execute_async_v3(stream):
            raise EngineError("TensorRT execute_async_v3 failed (see its log)")
        return out.float()

    def save_runtime_cache(self) -> None:
        """Write TensorRT-RTX's compiled kernels next to the engine (atomically) for the next run."""
        if self._runtime_cache is None or self.runtime_cache_path is None:
            return
        from tdmi.utils import write_bytes_atomic

        blob = self._runtime_cache.serialize()
        if blob is not None:
            write_bytes_atomic(self.runtime_cache_path, bytes(memoryview(blob)))

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.save_runtime_cache()
        except OSError as e:  # a read-only engine folder must not turn close() into a failure
            self.warnings.append(f"could not save the runtime cache {self.runtime_cache_path}: {e}")
        super().close()
        cudart = self._cudart
        for graph, exec_graph in self._graphs.values():
            cudart.cudaGraphExecDestroy(exec_graph)
            cudart.cudaGraphDestroy(graph)
        self._graphs.clear()
        cudart.cudaStreamSynchronize(self._stream)
        cudart.cudaFree(self._d_in)
        cudart.cudaFree(self._d_out)
        cudart.cudaStreamDestroy(self._stream)
        self.context = None
        self.engine = None
