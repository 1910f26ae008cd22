"""Runtime: torch and ONNX Runtime predictors agree on tdmi-tiny; chunking, validation, keypoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tdmi import runtime
from tdmi.artifacts.sidecar import BatchProfile, BuildEnvironment, GpuInfo
from tdmi.errors import BackendUnavailableError, ConfigError, DataError, EngineError, ExportError, TdmiError
from tdmi.model import TDMI
from tdmi.runtime import plan_chunks
from tdmi.runtime.torch_backend import TorchPredictor

ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny_onnx(tiny_onnx_dynamic: Path, tiny_onnx_b2: Path) -> dict[str, Path]:
    """The session's exports of ``tiny_net``'s weights (tests/conftest.py): dynamic and static batch 2."""
    return {"dynamic": tiny_onnx_dynamic, "static2": tiny_onnx_b2}


@pytest.fixture(scope="module")
def clips(tiny_net: TDMI) -> np.ndarray:
    t, (h, w) = tiny_net.config.num_frames, tiny_net.config.input_size
    return np.random.default_rng(0).standard_normal((5, t, 3, h, w)).astype(np.float32)


# -- chunking --------------------------------------------------------------------------------------


def test_plan_chunks_covers_the_batch() -> None:
    assert plan_chunks(0, 4) == []
    assert [(c.start, c.stop, c.run_size) for c in plan_chunks(10, 4)] == [(0, 4, 4), (4, 8, 4), (8, 10, 2)]
    assert [(c.start, c.stop, c.run_size) for c in plan_chunks(5, 2, 2)] == [(0, 2, 2), (2, 4, 2), (4, 5, 2)]
    assert plan_chunks(5, 2, 2)[-1].padding == 1
    assert [(c.start, c.stop) for c in plan_chunks(7, None)] == [(0, 7)]
    assert [(c.run_size) for c in plan_chunks(3, 8, 4)] == [4]


@pytest.mark.parametrize(("n", "lo", "hi"), [(-1, 1, 4), (3, 0, 4), (3, 5, 4)])
def test_plan_chunks_rejects_bad_ranges(n: int, lo: int, hi: int) -> None:
    with pytest.raises(ConfigError):
        plan_chunks(n, hi, lo)


# -- torch vs ONNX Runtime -------------------------------------------------------------------------


def test_backends_agree_on_tiny(tiny_net: TDMI, tiny_onnx: dict[str, Path], clips: np.ndarray) -> None:
    with TorchPredictor(tiny_net, "cpu") as tp, runtime.load(tiny_onnx["dynamic"]) as op:
        assert (tp.backend, op.backend) == ("torch", "onnxruntime")
        assert tp.config == op.config and op.precision == "fp32"
        assert op.input_shape == (3, 3, 128, 96) and op.output_shape == (17, 32, 24)
        a, b = tp.predict(clips), op.predict(clips)
    assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
    assert a.shape == b.shape == (5, 17, 32, 24) and a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)
    assert np.abs(a).max() > 1e-3  # not a trivially zero output


def test_torch_input_gives_torch_output(tiny_onnx: dict[str, Path], clips: np.ndarray) -> None:
    with runtime.load(tiny_onnx["dynamic"]) as op:
        out_np = op.predict(clips)
        out_t = op.predict(torch.from_numpy(clips))
    assert isinstance(out_t, torch.Tensor) and out_t.device.type == "cpu" and out_t.dtype == torch.float32
    np.testing.assert_array_equal(out_t.numpy(), out_np)


def test_chunking_gives_the_same_heatmaps(tiny_onnx: dict[str, Path], clips: np.ndarray) -> None:
    with runtime.load(tiny_onnx["dynamic"]) as whole:
        ref = whole.predict(clips)
    with runtime.load(tiny_onnx["static2"]) as fixed:
        assert (fixed.min_batch, fixed.max_batch) == (2, 2)
        out = fixed.predict(clips)  # 5 clips: 2 + 2 + 1 padded to 2
        single = fixed.predict(clips[:1])
        torch_out = fixed.predict(torch.from_numpy(clips))
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)
    np.testing.assert_allclose(single, ref[:1], atol=ATOL, rtol=0)
    np.testing.assert_allclose(torch_out.numpy(), ref, atol=ATOL, rtol=0)


def test_torch_predictor_loads_presets_and_checkpoints(
    tiny_net: TDMI, tiny_checkpoint: Path, clips: np.ndarray
) -> None:
    with runtime.load(tiny_checkpoint) as p:
        assert p.backend == "torch" and p.device == "cpu"
        np.testing.assert_allclose(
            p.predict(clips[:2]), TorchPredictor(tiny_net, "cpu").predict(clips[:2]), atol=0
        )
    with runtime.load("tdmi-tiny", device="cpu") as p:
        assert p.config.name == "tdmi-tiny" and p.predict(clips[:1]).shape == (1, 17, 32, 24)


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dtype", "fragment"),
    [
        ((3, 3, 128, 96), np.float32, "rank 4"),
        ((1, 5, 3, 128, 96), np.float32, "T=3"),
        ((1, 3, 1, 128, 96), np.float32, "3 colour channels"),
        ((1, 3, 3, 256, 192), np.float32, "128x96"),
        ((1, 3, 3, 128, 96), np.float64, "float32"),
        ((1, 3, 3, 128, 96), np.uint8, "uint8"),
    ],
)
def test_input_validation(tiny_net: TDMI, shape: tuple[int, ...], dtype: type, fragment: str) -> None:
    p = TorchPredictor(tiny_net, "cpu")
    with pytest.raises(DataError, match=fragment) as e:
        p.predict(np.zeros(shape, dtype=dtype))
    assert "[B, 3, 3, 128, 96]" in str(e.value) or fragment in str(e.value)
    with pytest.raises(DataError, match=fragment):
        p.predict(torch.zeros(shape, dtype=torch.from_numpy(np.zeros(1, dtype)).dtype))


def test_non_array_input_and_closed_predictor(tiny_net: TDMI) -> None:
    p = TorchPredictor(tiny_net, "cpu")
    with pytest.raises(DataError, match="numpy array or torch tensor"):
        p.predict([[0.0]])
    assert p.predict(np.zeros((0, 3, 3, 128, 96), np.float32)).shape == (0, 17, 32, 24)
    p.close()
    with pytest.raises(TdmiError, match="closed"):
        p.predict(np.zeros((1, 3, 3, 128, 96), np.float32))


# -- load() dispatch -------------------------------------------------------------------------------


def test_infer_backend() -> None:
    from tdmi.spec.config import get_preset

    assert runtime.infer_backend("m.onnx") == "onnxruntime"
    assert runtime.infer_backend(Path("m.engine")) == "tensorrt"
    assert runtime.infer_backend("m.plan") == "tensorrt"
    assert runtime.infer_backend("m.pth") == "torch"
    assert runtime.infer_backend("tdmi-tiny") == "torch"
    assert runtime.infer_backend(get_preset("tdmi-tiny")) == "torch"
    with pytest.raises(ConfigError, match="cannot tell which backend"):
        runtime.infer_backend("m.tflite")


def test_load_rejects_a_backend_the_artifact_cannot_use(tiny_onnx: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="onnxruntime artifact"):
        runtime.load(tiny_onnx["dynamic"], backend="tensorrt")
    with pytest.raises(ConfigError, match="unknown backend"):
        runtime.load(tiny_onnx["dynamic"], backend="tvm")


def test_fused_graph_is_refused_naming_the_plain_form(tiny_onnx: dict[str, Path], tmp_path: Path) -> None:
    """The runtime never rewrites a graph (it needs no onnx): a fused TensorRT graph is refused in
    one line that names the commands writing the form ONNX Runtime runs."""
    import onnx

    from tdmi.export.fuse import fuse_temporal_diff

    fused_path = tmp_path / "fused.onnx"
    model = fuse_temporal_diff(onnx.load(str(tiny_onnx["dynamic"])))
    assert any(n.op_type == "TemporalDiff" for n in model.graph.node)
    onnx.save(model, str(fused_path))
    for device in ("cpu", None):
        with pytest.raises(ExportError, match="fused TensorRT graph") as info:
            runtime.load(fused_path, device=device)
        message = str(info.value)
        assert "\n" not in message and "--no-fuse --onnx-only" in message and "tdmi-export onnx" in message
    with runtime.load(tiny_onnx["dynamic"]) as plain:
        assert not plain.fused


def test_onnx_without_metadata_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Relu", ["frames"], ["heatmaps"])],
        "g",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, 3, 3, 128, 96])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, None)],
    )
    p = tmp_path / "bare.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)]), str(p))
    with pytest.raises(TdmiError, match="no tdmi metadata"):
        runtime.load(p)


# -- keypoints -------------------------------------------------------------------------------------


def test_predict_keypoints_on_the_sample_clip(tiny_net: TDMI, tiny_onnx: dict[str, Path]) -> None:
    from tdmi.data.sample import sample_video

    video = sample_video(num_frames=3, size=(360, 640))
    boxes = np.stack([video.box_xywh, video.box_xywh + np.array([20.0, 0.0, 0.0, 0.0])])
    with TorchPredictor(tiny_net, "cpu") as tp, runtime.load(tiny_onnx["static2"]) as op:
        kp_t, sc_t = runtime.predict_keypoints(tp, video.frames, boxes)
        kp_o, sc_o = runtime.predict_keypoints(op, video.frames, boxes)
        kp_f, sc_f = runtime.predict_keypoints(op, video.frames, boxes, flip_test=True, refine="dark")
        kp_1, _ = op.predict_keypoints(video.frames, video.box_xywh)
    assert kp_t.shape == kp_f.shape == (2, 17, 2) and sc_t.shape == sc_f.shape == (2, 17)
    np.testing.assert_allclose(kp_t, kp_o, atol=1e-2)
    np.testing.assert_allclose(sc_t, sc_o, atol=ATOL)
    np.testing.assert_allclose(kp_1[0], kp_o[0], atol=1e-3)
    # Decoded into image pixels, around the person's (padded) box.
    x, y, w, h = video.box_xywh
    assert np.all(kp_t[0, :, 0] > x - w) and np.all(kp_t[0, :, 0] < x + 2 * w)
    assert np.all(kp_t[0, :, 1] > y - h) and np.all(kp_t[0, :, 1] < y + 2 * h)
    assert not np.allclose(kp_f, kp_o)  # the flip test changes the answer


def test_predict_keypoints_validates_frames_and_boxes(tiny_net: TDMI) -> None:
    from tdmi.data.sample import sample_video

    video = sample_video(num_frames=3, size=(360, 640))
    p = TorchPredictor(tiny_net, "cpu")
    with pytest.raises(DataError, match="T=3"):
        runtime.predict_keypoints(p, video.frames[:2], video.box_xywh)
    with pytest.raises(DataError, match=r"\[N, 4\]"):
        runtime.predict_keypoints(p, video.frames, np.zeros((2, 3)))
    kp, sc = runtime.predict_keypoints(p, video.frames, np.zeros((0, 4)))
    assert kp.shape == (0, 17, 2) and sc.shape == (0, 17)
    with pytest.raises(DataError, match=r"boxes contain NaN or Inf \(box index \[1\]\)"):
        runtime.predict_keypoints(p, video.frames, np.array([[10, 10, 50, 80], [np.nan, 0, 5, 5]]))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_refused_by_every_backend(
    tiny_net: TDMI, tiny_onnx: dict[str, Path], clips: np.ndarray, bad: float
) -> None:
    """One NaN pixel used to segfault torchvision's deform_conv2d and give all-NaN ORT heatmaps."""
    x = clips[:3].copy()
    x[1, 0, 0, 5, 5] = bad
    for p in (TorchPredictor(tiny_net, "cpu"), runtime.load(tiny_onnx["dynamic"])):
        with pytest.raises(DataError, match=r"NaN or Inf values \(clip index 1 of 3\)"):
            p.predict(x)
        with pytest.raises(DataError, match="clip index 1 of 3"):
            p.predict(torch.from_numpy(x))


def test_non_finite_output_is_never_silent(tiny_net: TDMI, clips: np.ndarray) -> None:
    from tdmi.errors import NonFiniteOutputWarning

    broken = TDMI(tiny_net.config).eval()
    broken.load_state_dict(tiny_net.state_dict())
    with torch.no_grad():
        broken.head.final_layer.bias.fill_(float("inf"))  # as an FP16 overflow would
    with pytest.warns(NonFiniteOutputWarning, match="clip index 0, 1 of 2"):
        out = TorchPredictor(broken, "cpu").predict(clips[:2])
    assert not np.isfinite(out).any()


# -- TensorRT backend ------------------------------------------------------------------------------


def _fake_engine_with_sidecar(tmp_path: Path, trt_version: str, cc: str) -> Path:
    """An engine file next to a valid sidecar: the checks below must fire before TensorRT reads it."""
    from tdmi.artifacts.sidecar import EngineSidecar, PluginInfo, TensorInfo, sidecar_path, write_sidecar
    from tdmi.spec.config import get_preset

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"serialized engine bytes")
    env = BuildEnvironment(trt_version, "13.0", "13.0", GpuInfo("NVIDIA H100 80GB HBM3", cc))
    sc = EngineSidecar(
        model_config=get_preset("tdmi-tiny").to_dict(),
        precision="fp32",
        inputs=(TensorInfo("frames", (-1, 3, 3, 128, 96), "float32"),),
        outputs=(TensorInfo("heatmaps", (-1, 17, 32, 24), "float32"),),
        profile=BatchProfile(1, 2, 4),
        environment=env,
        plugin=PluginInfo("TemporalDiff", "tdmi", "1", None),
        source_onnx_sha256="0" * 64,
        engine_sha256="1" * 64,
        toolkit_version="tdmi-deploy 0.1.0",
    )
    write_sidecar(sidecar_path(engine), sc)
    return engine


def test_engine_from_another_tensorrt_is_refused_before_deserialising(tmp_path: Path) -> None:
    engine = _fake_engine_with_sidecar(tmp_path, "10.13.0.35", "9.0")
    here = BuildEnvironment("11.4.0.106", "13.0", "13.0", GpuInfo("NVIDIA H100 80GB HBM3", "9.0"))
    with pytest.raises(EngineError) as e:
        runtime.load(engine, environment=here)
    assert "10.13.0.35" in str(e.value) and "11.4.0.106" in str(e.value)


def test_engine_for_another_gpu_is_refused_before_deserialising(tmp_path: Path) -> None:
    engine = _fake_engine_with_sidecar(tmp_path, "11.4.0.106", "8.9")
    here = BuildEnvironment("11.4.0.106", "13.0", "13.0", GpuInfo("NVIDIA H100 80GB HBM3", "9.0"))
    with pytest.raises(EngineError, match=r"compute capability 8\.9.*compute capability 9\.0"):
        runtime.load(engine, environment=here)


def test_engine_without_sidecar_or_file(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="not found"):
        runtime.load(tmp_path / "missing.engine")
    lone = tmp_path / "lone.engine"
    lone.write_bytes(b"x")
    with pytest.raises(EngineError, match="sidecar"):
        runtime.load(lone)
    (tmp_path / "lone.engine.json").write_text(
        json.dumps({"schema": "tdmi-engine-sidecar", "schema_version": 1})
    )
    with pytest.raises(EngineError, match="missing"):
        runtime.load(lone)


@pytest.mark.without("tensorrt", reason="TensorRT and a GPU are present")
def test_without_tensorrt_the_message_says_how_to_install(tmp_path: Path) -> None:
    engine = _fake_engine_with_sidecar(tmp_path, "11.4.0.106", "9.0")
    with pytest.raises(BackendUnavailableError, match=r"tdmi-deploy\[trt\]"):
        runtime.load(engine)


@pytest.mark.tensorrt
@pytest.mark.cuda
def test_tensorrt_backend_agrees_with_onnxruntime(
    tiny_onnx: dict[str, Path], tmp_path: Path, clips: np.ndarray
) -> None:
    from tdmi.export.engine import EngineBuildOptions, build_engine

    engine = tmp_path / "tiny.engine"
    build_engine(tiny_onnx["dynamic"], engine, EngineBuildOptions(profile=BatchProfile(1, 2, 2)))
    with runtime.load(tiny_onnx["dynamic"]) as op:
        ref = op.predict(clips)
    for graph in (False, True):
        with runtime.load(engine, cuda_graph=graph) as tp:
            assert tp.backend == "tensorrt" and tp.max_batch == 2
            out = tp.predict(clips)  # 5 clips through a max-2 profile: chunked
            np.testing.assert_allclose(out, ref, atol=1e-3, rtol=1e-3)
            cuda_in = torch.from_numpy(clips).cuda()
            out_t = tp.predict(cuda_in)
            assert out_t.device == cuda_in.device
            np.testing.assert_allclose(out_t.cpu().numpy(), ref, atol=1e-3, rtol=1e-3)
