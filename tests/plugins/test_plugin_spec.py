"""TemporalDiff contract: the numpy reference against an independent torch formulation, and the ONNX node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from tdmi.plugins.temporal_diff import (
    SPEC,
    make_node,
    node_attributes,
    opset_import,
    output_shape,
    temporal_diff_reference,
)

SHAPES = [(2, 3, 3, 5, 7), (1, 2, 1, 1, 1), (3, 5, 4, 2, 3), (2, 3, 256, 6, 4), (1, 7, 5, 3, 1)]


def torch_frame_loop(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Written from the paper's formula, clip by clip and frame by frame (no reshape tricks)."""
    bt = x.shape[0]
    clips = []
    for b in range(bt // num_frames):
        diffs = [x[b * num_frames + k + 1] - x[b * num_frames + k] for k in range(num_frames - 1)]
        clips.append(torch.cat(diffs, dim=0))
    return torch.stack(clips)


@pytest.mark.parametrize(("b", "t", "c", "h", "w"), SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_reference_matches_independent_torch(b: int, t: int, c: int, h: int, w: int, dtype: type) -> None:
    rng = np.random.default_rng(b * 1000 + t * 100 + c)
    x = rng.standard_normal((b * t, c, h, w)).astype(dtype)
    ref = temporal_diff_reference(x, t)
    expected = torch_frame_loop(torch.from_numpy(x), t).numpy()
    assert ref.dtype == dtype
    assert ref.shape == output_shape(x.shape, t) == (b, (t - 1) * c, h, w)
    np.testing.assert_array_equal(ref, expected)


def test_reference_channel_layout_is_frame_major() -> None:
    # x[n, c] = 10*n + c: every difference of consecutive frames is 10, and channel k*C + c of
    # clip b comes from frames b*T+k+1 and b*T+k, which makes the layout visible in the values.
    b, t, c = 2, 4, 3
    x = (10 * np.arange(b * t)[:, None] + np.arange(c)[None, :]).astype(np.float32)
    x = np.ascontiguousarray(np.broadcast_to(x[:, :, None, None], (b * t, c, 2, 2)))
    x[5, 1] += 1000.0  # clip 1, frame 1, channel 1
    ref = temporal_diff_reference(x, t)
    assert ref[0].max() == ref[0].min() == 10
    # frame 1 of clip 1 appears as the minuend of k=0 and the subtrahend of k=1, channel 1
    assert ref[1, 0 * c + 1, 0, 0] == 1010 and ref[1, 1 * c + 1, 0, 0] == -990
    assert np.all(np.delete(ref[1], [1, c + 1], axis=0) == 10)


@pytest.mark.parametrize(
    ("shape", "t", "error"),
    [((6, 2, 2), 3, "expects"), ((6, 2, 2, 2), 1, ">= 2"), ((7, 2, 2, 2), 3, "multiple")],
)
def test_reference_and_output_shape_reject_bad_input(shape: tuple[int, ...], t: int, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        temporal_diff_reference(np.zeros(shape, np.float32), t)
    with pytest.raises(ValueError, match=error):
        output_shape(shape, t)


def test_node_attributes_follow_the_parser_contract() -> None:
    attrs = node_attributes(5)
    assert attrs == {"num_frames": 5, "plugin_namespace": "tdmi", "plugin_version": "1", "aot": 1}
    assert node_attributes(3, aot=False)["aot"] == 0
    assert SPEC.plugin_id == "tdmi::TemporalDiff"
    with pytest.raises(ValueError):
        node_attributes(1)
    with pytest.raises(TypeError):
        node_attributes(True)


def test_make_node_builds_a_valid_model() -> None:
    t, c, h, w = 3, 4, 5, 6
    node = make_node("feat", "diff", t)
    assert (node.op_type, node.domain) == (SPEC.op_type, SPEC.domain)
    kinds = {a.name: a.type for a in node.attribute}
    assert kinds == {
        "num_frames": onnx.AttributeProto.INT,
        "plugin_namespace": onnx.AttributeProto.STRING,
        "plugin_version": onnx.AttributeProto.STRING,
        "aot": onnx.AttributeProto.INT,
    }
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert values == {"num_frames": 3, "plugin_namespace": b"tdmi", "plugin_version": b"1", "aot": 1}
    graph = helper.make_graph(
        [node],
        "td",
        [helper.make_tensor_value_info("feat", TensorProto.FLOAT, [2 * t, c, h, w])],
        [helper.make_tensor_value_info("diff", TensorProto.FLOAT, [2, (t - 1) * c, h, w])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), opset_import()])
    onnx.checker.check_model(model)
    assert any(o.domain == "tdmi" and o.version == SPEC.domain_version for o in model.opset_import)
