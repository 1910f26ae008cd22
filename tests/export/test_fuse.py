"""fuse_temporal_diff: four tdmi::TemporalDiff nodes, same heatmaps as the unfused graph, clean failures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto
from onnx import helper as oh
from onnx.reference import ReferenceEvaluator

from tdmi.cli.common import run_app
from tdmi.cli.export import app
from tdmi.errors import ExportError
from tdmi.export import (
    ExportResult,
    export_onnx,
    find_temporal_diffs,
    fuse_temporal_diff,
    inspect,
    read_metadata,
    run_onnx,
)
from tdmi.export.fuse import fuse_file
from tdmi.export.onnx_export import example_clips
from tdmi.export.ort_ops import _TemporalDiffOp, make_session, temporal_diff_nodes, with_cpu_temporal_diff
from tdmi.model import PRESETS, TDMI, get_preset
from tdmi.plugins.temporal_diff import SPEC, node_attributes, temporal_diff_reference

PRESET = "tdmi-tiny"
pytestmark = pytest.mark.filterwarnings("ignore:no checkpoint given")


def _flat(text: str) -> str:
    """Rich wraps long lines at the console width; compare text with single spaces."""
    return " ".join(text.split())


def _export(folder: Path, name: str, num_frames: int = 3) -> ExportResult:
    torch.manual_seed(num_frames)
    cfg = get_preset(PRESET).replace(num_frames=num_frames, name=f"{PRESET}-t{num_frames}")
    return export_onnx(cfg, folder / name, model=TDMI(cfg).eval(), batch="dynamic", progress=False)


@pytest.fixture(scope="session")
def unfused(tmp_path_factory: pytest.TempPathFactory) -> dict[int, ExportResult]:
    folder = tmp_path_factory.mktemp("fuse")
    return {3: _export(folder, "t3.onnx", 3), 5: _export(folder, "t5.onnx", 5)}


@pytest.mark.parametrize("num_frames", [3, 5])
def test_fuse_replaces_four_blocks_and_matches(unfused: dict[int, ExportResult], num_frames: int) -> None:
    src = onnx.load(str(unfused[num_frames].path))
    patterns = find_temporal_diffs(src)
    assert [p.stage for p in patterns] == [1, 2, 3, 4]
    assert {p.num_frames for p in patterns} == {num_frames}
    fused = fuse_temporal_diff(src, expected=4)
    onnx.checker.check_model(fused, full_check=True)
    nodes = temporal_diff_nodes(fused)
    assert [n.name for n in nodes] == [f"tde/stage{j}/diff/TemporalDiff" for j in range(1, 5)]
    for n in nodes:
        assert n.domain == SPEC.domain and len(n.input) == 1 and len(n.output) == 1
        assert {a.name: oh.get_attribute_value(a) for a in n.attribute} == {
            k: (v.encode() if isinstance(v, str) else v) for k, v in node_attributes(num_frames).items()
        }
    assert any(o.domain == SPEC.domain and o.version == SPEC.domain_version for o in fused.opset_import)
    assert not [n.name for n in fused.graph.node if n.op_type == "Sub" and "/diff/" in n.name]
    assert find_temporal_diffs(fused) == []
    clips = example_clips(unfused[num_frames].config, 3)
    for b in (1, 3):
        a, f = run_onnx(src, clips[:b]), run_onnx(fused, clips[:b])
        np.testing.assert_allclose(f, a, rtol=0, atol=1e-6)
    meta = read_metadata(fused)
    assert meta["fused"] is True and meta["variant"] == "fp32-fused"


def test_cpu_temporal_diff_matches_reference() -> None:
    """Our ORT-side implementation (a model-local function) and onnx.reference agree with numpy."""
    rng = np.random.default_rng(0)
    for t, dtype, elem in ((3, np.float32, TensorProto.FLOAT), (5, np.float16, TensorProto.FLOAT16)):
        node = oh.make_node(SPEC.op_type, ["x"], ["y"], domain=SPEC.domain, **node_attributes(t))
        graph = oh.make_graph(
            [node],
            "g",
            [oh.make_tensor_value_info("x", elem, ["bt", 4, 5, 6])],
            [oh.make_tensor_value_info("y", elem, ["b", 4 * (t - 1), 5, 6])],
        )
        model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 19), oh.make_opsetid(SPEC.domain, 1)])
        x = rng.standard_normal((2 * t, 4, 5, 6)).astype(dtype)
        want = temporal_diff_reference(x, t)
        sess = make_session(model)
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], want)
        ref = ReferenceEvaluator(model, new_ops=[_TemporalDiffOp.get()])
        np.testing.assert_array_equal(ref.run(None, {"x": x})[0], want)
        assert (
            len(with_cpu_temporal_diff(model).functions) == 1 and not model.functions
        )  # the file itself stays bare


def test_no_pattern_warns_and_leaves_graph_unchanged() -> None:
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    model = oh.make_model(oh.make_graph([oh.make_node("Relu", ["x"], ["y"], name="r")], "g", [x], [y]))
    before = model.SerializeToString()
    with pytest.warns(UserWarning, match="no temporal-difference pattern"):
        out = fuse_temporal_diff(model)
    assert out.SerializeToString() == before


def test_structure_without_names_is_still_found(unfused: dict[int, ExportResult]) -> None:
    src = onnx.load(str(unfused[3].path))
    for i, n in enumerate(src.graph.node):
        n.name = f"n{i}"
    with pytest.warns(UserWarning, match="numbering them in graph order"):
        fused = fuse_temporal_diff(src, expected=4)
    assert len(temporal_diff_nodes(fused)) == 4


def test_expected_count_mismatch_is_an_error(unfused: dict[int, ExportResult]) -> None:
    with pytest.raises(ExportError, match="found 4 temporal-difference blocks, expected 5"):
        fuse_temporal_diff(onnx.load(str(unfused[3].path)), expected=5)


def test_fuse_file_and_cli(
    unfused: dict[int, ExportResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fused.onnx"
    res = fuse_file(unfused[3].path, out)
    assert res["fused"] == 4 and res["error"].max_abs <= 1e-6
    assert inspect(out)["variant"] == "fp32-fused"
    with pytest.raises(ExportError, match="already fused"):
        fuse_file(out, tmp_path / "twice.onnx")
    assert not (tmp_path / "twice.onnx").exists()
    cli_out = tmp_path / "cli.onnx"
    assert run_app(app, ["fuse", str(unfused[3].path), "-o", str(cli_out)]) == 0
    assert "4 TemporalDiff nodes" in _flat(capsys.readouterr().out) and cli_out.is_file()


def test_fuse_rejects_corrupt_and_foreign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 definitely not a model")
    out = tmp_path / "out.onnx"
    assert run_app(app, ["fuse", str(bad), "-o", str(out)]) == 1
    assert "error:" in _flat(capsys.readouterr().err) and not out.exists()
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(oh.make_model(oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "g", [x], [y])), str(foreign))
    with pytest.raises(ExportError, match="no tdmi metadata"):
        fuse_file(foreign, out)
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TDMI_SLOW"), reason="full-size presets (minutes): TDMI_SLOW=1")
@pytest.mark.parametrize("preset", [p for p in PRESETS if p != PRESET])
def test_every_preset_has_four_blocks(tmp_path: Path, preset: str) -> None:
    res = export_onnx(preset, tmp_path / "m.onnx", verify=False, progress=False)
    patterns = find_temporal_diffs(onnx.load(str(res.path)))
    assert [p.stage for p in patterns] == [1, 2, 3, 4]
    assert {p.num_frames for p in patterns} == {get_preset(preset).num_frames}
