"""TensorRT: the ONNX parser maps a TemporalDiff node to the AOT plugin, and the engine computes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tdmi.errors import BackendUnavailableError
from tdmi.plugins import trt_plugin
from tdmi.plugins.availability import (
    TENSORRT_MISSING,
    Availability,
    tensorrt_available,
)
from tdmi.plugins.temporal_diff import make_node, opset_import, output_shape, temporal_diff_reference

TRT = tensorrt_available()


@pytest.mark.skipif(bool(TRT), reason="TensorRT is installed; the forced variant below covers this path")
def test_register_plugins_without_tensorrt_raises_clear_error() -> None:
    with pytest.raises(BackendUnavailableError) as info:
        trt_plugin.register_plugins()
    assert str(info.value) == TENSORRT_MISSING


def test_register_plugins_reports_missing_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    # Same path as above but forced, so it runs on machines that do have TensorRT too.
    monkeypatch.setattr(trt_plugin, "tensorrt_available", lambda: Availability(False, TENSORRT_MISSING))
    monkeypatch.setitem(trt_plugin._STATE, "registered", False)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'tdmi-deploy\[trt\]'"):
        trt_plugin.register_plugins()


def test_register_plugins_rejects_unshipped_arch() -> None:
    with pytest.raises(BackendUnavailableError, match="compute_61"):
        trt_plugin.register_plugins(ptx_arch=61)


def one_node_model(path: Path, shape: tuple[int, int, int, int], num_frames: int, elem: int) -> None:
    node = make_node("feature", "diff", num_frames)
    graph = helper.make_graph(
        [node],
        "temporal_diff",
        [helper.make_tensor_value_info("feature", elem, list(shape))],
        [helper.make_tensor_value_info("diff", elem, list(output_shape(shape, num_frames)))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), opset_import()])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def build_engine(onnx_path: Path) -> bytes:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # TensorRT 10: opt in; 11: always strongly typed
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise AssertionError(f"ONNX parser rejected the TemporalDiff node:\n{errors}")
    assert network.num_layers == 1
    assert network.get_layer(0).type == trt.LayerType.PLUGIN_V3
    config = builder.create_builder_config()
    serialized = builder.build_serialized_network(network, config)
    assert serialized is not None, "engine build failed"
    return bytes(serialized)


def run_engine(engine_bytes: bytes, x_host: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    import tensorrt as trt
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()
    x = torch.from_numpy(x_host).cuda()
    y = torch.full(out_shape, float("nan"), device="cuda", dtype=x.dtype)
    context.set_tensor_address("feature", x.data_ptr())
    context.set_tensor_address("diff", y.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return y.cpu().numpy()


@pytest.mark.parametrize(
    ("b", "t", "c", "h", "w", "dtype"),
    [
        (2, 3, 3, 5, 7, np.float32),  # odd plane: scalar path
        (1, 5, 4, 8, 8, np.float32),  # T=5, vector path
        (2, 3, 48, 24, 18, np.float32),
        (2, 3, 3, 5, 7, np.float16),
        (2, 3, 48, 24, 18, np.float16),
    ],
)
@pytest.mark.tensorrt
@pytest.mark.cuda
def test_onnx_node_builds_and_runs_through_tensorrt(
    tmp_path: Path, b: int, t: int, c: int, h: int, w: int, dtype: type
) -> None:
    trt_plugin.register_plugins()
    trt_plugin.register_plugins()  # idempotent
    shape = (b * t, c, h, w)
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.FLOAT16
    onnx_path = tmp_path / "td.onnx"
    one_node_model(onnx_path, shape, t, elem)
    engine = build_engine(onnx_path)
    x = np.random.default_rng(7).standard_normal(shape).astype(dtype)
    y = run_engine(engine, x, output_shape(shape, t))
    if dtype == np.float32:
        np.testing.assert_array_equal(y, temporal_diff_reference(x, t))
    else:
        ref = temporal_diff_reference(x.astype(np.float64), t).astype(np.float16)
        np.testing.assert_allclose(y.astype(np.float32), ref.astype(np.float32), rtol=2**-10, atol=2**-24)
