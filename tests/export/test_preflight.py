"""Pre-flight checks: each bad graph is built on purpose and must produce its finding, on the right node."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tdmi.artifacts.sidecar import BatchProfile
from tdmi.errors import ConfigError, ExportError
from tdmi.export.metadata import write_metadata
from tdmi.export.preflight import check_onnx, op_table
from tdmi.plugins.temporal_diff import SPEC, make_node
from tdmi.spec.config import get_preset

TINY = get_preset("tdmi-tiny")  # T=3, 128x96
FRAMES_SHAPE = ["batch", 3, 3, 128, 96]
FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def _model(
    nodes: list[onnx.NodeProto],
    *,
    inits: list[onnx.TensorProto] = (),  # type: ignore[assignment]
    frames_shape: list[int | str] = FRAMES_SHAPE,
    out: str = "heatmaps",
    opset: int = 19,
    tdmi_domain: bool = False,
    config: object = TINY,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("frames", FLOAT, frames_shape)],
        [helper.make_tensor_value_info(out, FLOAT, None)],
        initializer=list(inits),
    )
    opsets = [helper.make_opsetid("", opset)]
    if tdmi_domain:
        opsets.append(helper.make_opsetid(SPEC.domain, SPEC.domain_version))
    model = helper.make_model(graph, opset_imports=opsets)
    if config is not None:
        write_metadata(model, config)
    return model


def _codes(report: object, severity: str = "error") -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for f in report.findings:  # type: ignore[attr-defined]
        if f.severity == severity:
            found.setdefault(f.code, []).append(f.node)
    return found


def _flatten() -> onnx.NodeProto:
    """frames [B,3,3,128,96] -> x [B*3, 3, 128, 96]."""
    return helper.make_node("Reshape", ["frames", "shape4"], ["x"], name="to4d")


SHAPE4 = numpy_helper.from_array(np.array([-1, 3, 128, 96], dtype=np.int64), "shape4")


def _deform_conv(
    x_type: int = FLOAT, w_type: int = FLOAT, pads: tuple[int, ...] = (1, 1, 1, 1)
) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), dtype=helper.tensor_dtype_to_np_dtype(w_type)), "w")
    off = numpy_helper.from_array(np.zeros((1, 18, 128, 96), dtype=np.float32), "offset")
    nodes = [_flatten()]
    x = "x"
    if x_type != FLOAT:
        nodes.append(helper.make_node("Cast", ["x"], ["x_cast"], to=x_type, name="cast_x"))
        x = "x_cast"
    nodes.append(
        helper.make_node(
            "DeformConv", [x, "w", "offset"], ["heatmaps"], name="dcn", kernel_shape=[3, 3], pads=list(pads)
        )
    )
    return _model(nodes, inits=[SHAPE4, w, off])


def _temporal_diff(**attrs: object) -> onnx.ModelProto:
    node = helper.make_node(SPEC.op_type, ["x"], ["heatmaps"], name="td", domain=SPEC.domain, **attrs)
    return _model([_flatten(), node], inits=[SHAPE4], tdmi_domain=True)


# -- operator table ------------------------------------------------------------------------------


def test_operator_table_cites_its_source_and_covers_the_model_ops() -> None:
    from importlib import resources

    data = json.loads(resources.files("tdmi.export").joinpath("data/trt_onnx_ops.json").read_text())
    assert "onnx-tensorrt" in data["sources"]["10.15"] and "operators.md" in data["sources"]["10.15"]
    for version in ("11", "11.4.0.106", "10.15", "10.9"):
        table = op_table(version)
        for op in ("Conv", "DeformConv", "Relu", "Add", "Sub", "Concat", "Slice", "Resize", "Gemm"):
            assert table.ops[op]["supported"], (version, op)
        assert table.ops["DeformConv"]["types"] == ["FP32", "FP16"]
        assert not table.ops["Unique"]["supported"]


def test_operator_table_versions_differ_where_the_release_notes_say() -> None:
    assert "Swish" in op_table("11").ops and "Swish" not in op_table("10.15").ops
    assert "RMSNormalization" in op_table("10.15").ops and "RMSNormalization" not in op_table("10.12").ops
    assert op_table("11.4").max_opset == 24 and op_table("11.5").max_opset == 25
    assert op_table("10.9").max_opset == 20


@pytest.mark.parametrize("version", ["10.8", "9.3", "8"])
def test_operator_table_rejects_releases_without_aot_plugins(version: str) -> None:
    with pytest.raises(ConfigError, match=r"10\.9"):
        op_table(version)


# -- unsupported ops -----------------------------------------------------------------------------


def test_unsupported_and_unknown_ops_are_errors_naming_the_node() -> None:
    nodes = [
        helper.make_node("Unique", ["frames"], ["u"], name="uniq"),
        helper.make_node("FancyOp", ["u"], ["f"], name="fancy"),
        helper.make_node("Gelu", ["f"], ["g"], name="custom", domain="com.microsoft"),
        helper.make_node("Relu", ["g"], ["heatmaps"], name="ok_relu"),
    ]
    report = check_onnx(_model(nodes))
    codes = _codes(report)
    assert sorted(codes["unsupported-op"]) == ["fancy", "uniq"]
    assert codes["custom-op"] == ["custom"]
    assert not report.ok
    assert all(f.node != "ok_relu" for f in report.findings)
    with pytest.raises(ExportError, match="pre-flight check for TensorRT 11 found 3 error"):
        report.raise_if_errors()


def test_opset_bounds() -> None:
    nodes = [helper.make_node("Relu", ["frames"], ["heatmaps"], name="r")]
    assert "opset" in _codes(check_onnx(_model(nodes, opset=17)))
    assert "opset" in _codes(check_onnx(_model(nodes, opset=21), trt_version="10.9"))
    assert "opset" not in _codes(check_onnx(_model(nodes, opset=21), trt_version="11"))


# -- DeformConv ----------------------------------------------------------------------------------


def test_valid_deform_conv_passes() -> None:
    report = check_onnx(_deform_conv())
    assert report.ok, report.findings


def test_deform_conv_with_mixed_input_types() -> None:
    report = check_onnx(_deform_conv(x_type=FLOAT, w_type=HALF))
    codes = _codes(report)
    assert codes["deformconv-mixed-types"] == ["dcn"]
    msg = next(f.message for f in report.findings if f.code == "deformconv-mixed-types")
    assert "FP32" in msg and "FP16" in msg


def test_deform_conv_rejects_integer_inputs() -> None:
    report = check_onnx(_deform_conv(x_type=TensorProto.INT8, w_type=TensorProto.INT8))
    assert _codes(report)["deformconv-type"] == ["dcn"]


def test_deform_conv_with_asymmetric_pads() -> None:
    report = check_onnx(_deform_conv(pads=(1, 1, 0, 2)))
    codes = _codes(report)
    assert codes["deformconv-pads"] == ["dcn"]
    assert "[1, 1, 0, 2]" in next(f.message for f in report.findings if f.code == "deformconv-pads")


# -- the TemporalDiff plugin node ------------------------------------------------------------------


def test_temporal_diff_from_the_spec_passes() -> None:
    node = make_node("x", "heatmaps", TINY.num_frames, name="td")
    report = check_onnx(_model([_flatten(), node], inits=[SHAPE4], tdmi_domain=True))
    assert report.ok, report.findings


def test_temporal_diff_missing_its_num_frames_attribute() -> None:
    report = check_onnx(_temporal_diff(aot=1))
    assert _codes(report)["plugin-attr"] == ["td"]
    assert "num_frames" in report.errors[0].message


def test_temporal_diff_num_frames_must_match_the_config_in_the_metadata() -> None:
    report = check_onnx(_temporal_diff(num_frames=5, aot=1))
    assert _codes(report)["plugin-num-frames"] == ["td"]
    assert "num_frames=3" in report.errors[0].message


@pytest.mark.parametrize(
    ("attrs", "fragment"),
    [
        ({"num_frames": 3, "aot": 0}, "must be 1"),
        ({"num_frames": 3, "aot": 1, "stride": 2}, "unknown TemporalDiff attribute 'stride'"),
        ({"num_frames": "3", "aot": 1}, "must be an INT"),
        (
            {"num_frames": 3, "aot": 1, "plugin_namespace": "x"},
            "'plugin_namespace' must be the string 'tdmi'",
        ),
    ],
)
def test_temporal_diff_attribute_errors(attrs: dict[str, object], fragment: str) -> None:
    report = check_onnx(_temporal_diff(**attrs))
    assert any(fragment in f.message for f in report.errors), report.findings


def test_temporal_diff_needs_the_domain_opset_and_the_right_domain() -> None:
    node = make_node("x", "heatmaps", 3, name="td")
    report = check_onnx(_model([_flatten(), node], inits=[SHAPE4], tdmi_domain=False))
    assert "plugin-opset" in _codes(report)
    wrong = helper.make_node(SPEC.op_type, ["x"], ["heatmaps"], name="td_default", num_frames=3, aot=1)
    report = check_onnx(_model([_flatten(), wrong], inits=[SHAPE4]))
    assert _codes(report)["plugin-op"] == ["td_default"]


# -- Q/DQ placement --------------------------------------------------------------------------------


def _scalar(name: str, value: float | int, dtype: type) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def test_qdq_zero_point_must_be_int8_zero() -> None:
    nodes = [
        helper.make_node("QuantizeLinear", ["frames", "s", "zp_bad"], ["q"], name="q_bad"),
        helper.make_node("DequantizeLinear", ["q", "s", "zp_bad"], ["dq"], name="dq_bad"),
        helper.make_node("Relu", ["dq"], ["heatmaps"], name="r"),
    ]
    inits = [_scalar("s", 0.1, np.float32), _scalar("zp_bad", 3, np.int8)]
    codes = _codes(check_onnx(_model(nodes, inits=inits)))
    assert sorted(codes["qdq-zero-point"]) == ["dq_bad", "q_bad"]
    inits = [_scalar("s", 0.1, np.float32), _scalar("zp_bad", 0, np.uint8)]
    assert "qdq-zero-point" in _codes(check_onnx(_model(nodes, inits=inits)))
    inits = [_scalar("s", 0.1, np.float32), _scalar("zp_bad", 0, np.int8)]
    assert "qdq-zero-point" not in _codes(check_onnx(_model(nodes, inits=inits)))


def test_qdq_weights_per_tensor_warn_and_wrong_axis_errors() -> None:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), dtype=np.int8), "w_q")

    def conv_model(scale: np.ndarray, axis: int) -> onnx.ModelProto:
        nodes = [
            _flatten(),
            helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], name="dq_w", axis=axis),
            helper.make_node("Conv", ["x", "w"], ["heatmaps"], name="conv", pads=[1, 1, 1, 1]),
        ]
        zp = numpy_helper.from_array(np.zeros(scale.shape, dtype=np.int8), "w_zp")
        return _model(nodes, inits=[SHAPE4, w, numpy_helper.from_array(scale, "w_s"), zp])

    per_tensor = check_onnx(conv_model(np.array(0.1, dtype=np.float32), 0))
    assert _codes(per_tensor, "warning")["qdq-per-tensor-weight"] == ["dq_w"]
    assert per_tensor.ok
    wrong_axis = check_onnx(conv_model(np.full((3,), 0.1, dtype=np.float32), 1))
    assert _codes(wrong_axis)["qdq-weight-axis"] == ["dq_w"]
    good = check_onnx(conv_model(np.full((4,), 0.1, dtype=np.float32), 0))
    assert not good.findings, good.findings


def test_qdq_must_not_feed_the_plugin_or_deform_conv() -> None:
    td = make_node("xq", "heatmaps", 3, name="td")
    nodes = [_flatten(), helper.make_node("QuantizeLinear", ["x", "s"], ["xq"], name="q_x"), td]
    report = check_onnx(_model(nodes, inits=[SHAPE4, _scalar("s", 0.1, np.float32)], tdmi_domain=True))
    codes = _codes(report)
    assert codes["qdq-placement"] == ["td"] and codes["plugin-type"] == ["td"]

    dq_nodes = [
        _flatten(),
        helper.make_node("QuantizeLinear", ["x", "s"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "s"], ["xdq"], name="dq_x"),
        helper.make_node("DeformConv", ["xdq", "w", "offset"], ["heatmaps"], name="dcn", kernel_shape=[3, 3]),
    ]
    inits = [
        SHAPE4,
        _scalar("s", 0.1, np.float32),
        numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w"),
        numpy_helper.from_array(np.zeros((1, 18, 126, 94), np.float32), "offset"),
    ]
    report = check_onnx(_model(dq_nodes, inits=inits))
    assert _codes(report, "warning")["qdq-placement"] == ["dcn"]


# -- I/O and the profile ---------------------------------------------------------------------------


def test_profile_must_cover_a_static_batch() -> None:
    nodes = [helper.make_node("Relu", ["frames"], ["heatmaps"], name="r")]
    static = _model(nodes, frames_shape=[2, 3, 3, 128, 96])
    report = check_onnx(static, profile=BatchProfile(1, 4, 8))
    assert "profile" in _codes(report)
    assert "--batch 2:2:2" in report.errors[0].message
    assert check_onnx(static, profile=BatchProfile(2, 2, 2)).ok
    assert check_onnx(_model(nodes), profile=BatchProfile(1, 4, 8)).ok


def test_dynamic_clip_dims_and_a_config_mismatch_are_errors() -> None:
    nodes = [helper.make_node("Relu", ["frames"], ["heatmaps"], name="r")]
    report = check_onnx(_model(nodes, frames_shape=["b", "t", 3, 128, 96]))
    assert "dynamic-dim" in _codes(report) and "(T)" in report.errors[0].message
    report = check_onnx(_model(nodes, frames_shape=["b", 3, 3, 256, 192]))
    assert "[B, 3, 3, 128, 96]" in report.errors[0].message
    report = check_onnx(_model(nodes, frames_shape=["b", 3, 128, 96]))
    assert "rank 4" in report.errors[0].message


def test_rich_table_lists_every_finding() -> None:
    from rich.console import Console

    report = check_onnx(_deform_conv(pads=(1, 1, 0, 2)))
    console = Console(record=True, width=200)
    console.print(report.to_table())
    text = console.export_text()
    assert "deformconv-pads" in text and "dcn" in text and "1 error(s)" in text


def test_missing_file_is_an_export_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not found"):
        check_onnx(tmp_path / "nope.onnx")
