"""The one export pipeline: ``ExportSpec`` rules, ``build`` caching, and the output-path policy."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tdmi.errors import ExportError, TdmiError, UsageError
from tdmi.export.export_spec import ExportSpec, int8_recipe, parse_batch
from tdmi.utils import check_outputs, prepare_output

pytestmark = pytest.mark.filterwarnings("ignore:no checkpoint given")

# Each combination rule once: the spec's fields, and the message the CLI shows for them.
RULES: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"precision": "bf16"}, UsageError, "--precision must be fp32, fp16 or int8, got 'bf16'"),
    ({"precision": "fp16", "target": "any"}, UsageError, "--target must be tensorrt or onnxruntime"),
    ({"target": "tensorrt"}, UsageError, "--target applies to --precision fp16/int8 only"),
    ({"precision": "fp16", "target": "onnxruntime"}, UsageError, "FP16 is built for TensorRT"),
    ({"deform_conv": "lowered"}, UsageError, "--deform-conv must be native or decomposed"),
    ({"precision": "int8", "calib_method": "minmax"}, UsageError, "--calib-method must be auto, max"),
    ({"max_drop": 1.0}, UsageError, "--max-drop applies to --precision int8 only"),
    ({"op_types": ("Conv",)}, UsageError, "--op-types applies to --precision int8 only"),
    ({"precision": "int8", "max_drop": -1.0}, UsageError, "--max-drop must be 0 or more PCK points"),
    ({"precision": "int8", "min_speedup": 1.5}, UsageError, "--min-speedup applies with --max-drop only"),
    (
        {"precision": "int8", "max_drop": 1.0, "min_speedup": -1.0},
        UsageError,
        "--min-speedup must be 0 or more",
    ),
    ({"calib_clips": 0}, UsageError, "--calib-clips and --eval-clips must be positive"),
    ({"batch": 0}, UsageError, "--batch must be a positive integer or 'dynamic'"),
    ({"split": True, "precision": "int8"}, UsageError, "--split writes FP32 graphs with a dynamic batch"),
    ({"split": True, "batch": 4}, UsageError, "--split writes FP32 graphs with a dynamic batch"),
    (
        {"precision": "int8", "target": "onnxruntime", "op_types": ()},
        ExportError,
        "an ONNX Runtime INT8 recipe needs op types",
    ),
    ({"precision": "int8", "op_types": ("NotAnOp",)}, ExportError, "unknown ONNX op types to quantize"),
    # the OpenVINO target
    ({"target": "openvino", "precision": "fp16"}, UsageError, "--precision must be fp32, bf16, int8"),
    ({"target": "openvino", "deform_conv": "native"}, UsageError, "OpenVINO reads the DCN only as"),
    (
        {"target": "openvino", "precision": "int8", "calib_method": "entropy"},
        UsageError,
        "--calib-method must be auto, max or percentile (NNCF)",
    ),
    (
        {"target": "openvino", "precision": "bf16", "max_drop": 1.0},
        UsageError,
        "--calib, --max-drop and --op-types apply to --precision int8 only",
    ),
    (
        {"target": "openvino", "precision": "int8", "deform_conv": "decomposed", "op_types": ("Relu",)},
        ExportError,
        "NNCF cannot be limited to op type(s) Relu",
    ),
    ({"target": "openvino", "split": True}, UsageError, "--split writes ONNX graphs"),
]


@pytest.mark.parametrize(("fields", "error", "message"), RULES, ids=[r[2][:40] for r in RULES])
def test_each_combination_rule_lives_in_the_spec(
    fields: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=None) as caught:
        ExportSpec(config="tdmi-tiny", **fields)
    assert message in str(caught.value)


def test_valid_specs_and_their_defaults() -> None:
    int8 = ExportSpec(config="tdmi-tiny", precision="int8")
    assert int8.resolved_target == "tensorrt"  # an FP16/INT8 graph names TensorRT unless told
    assert ExportSpec(config="tdmi-tiny").resolved_target is None
    ov = ExportSpec(config="tdmi-tiny", target="openvino", precision="int8", deform_conv="decomposed")
    assert ov.fp32_source().deform_conv == "decomposed" and ov.fp32_source().precision == "fp32"
    assert parse_batch("dynamic") == "dynamic" and parse_batch("4") == 4


def test_the_int8_recipe_is_built_in_one_place() -> None:
    from tdmi.export.precision import default_recipe

    spec = ExportSpec(config="tdmi-tiny", precision="int8", target="onnxruntime", op_types=("Conv", "Add"))
    recipe = spec.recipe()
    assert recipe.op_types == ("Conv", "Add")
    assert recipe.calibration == default_recipe("onnxruntime").calibration
    assert int8_recipe("onnxruntime") == default_recipe("onnxruntime")


def test_the_spec_is_json(tmp_path: Path) -> None:
    from tdmi.model import get_preset

    spec = ExportSpec(
        config=get_preset("tdmi-tiny"), checkpoint=tmp_path / "w.pt", precision="int8", op_types=("Conv",)
    )
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["config"]["name"] == "tdmi-tiny" and data["checkpoint"] == str(tmp_path / "w.pt")
    assert data["op_types"] == ["Conv"] and data["precision"] == "int8"


# ------------------------------------------------------------------------------------------ build


def test_build_caches_reuses_and_heals(tmp_path: Path) -> None:
    """A second build reuses the cached graph; a damaged cached graph is rebuilt, not used."""
    from tdmi.export.pipeline import ArtifactCache, build
    from tdmi.model import get_preset

    cache = ArtifactCache.open(tmp_path, get_preset("tdmi-tiny"))
    cache.progress = False
    spec = cache.spec("fp32")
    first = build(spec, cache=cache).path
    assert first == cache.folder / "model-fp32.onnx" and first.is_file()
    assert cache.built == ["weights.pt", "model-fp32.onnx"]
    mtime = first.stat().st_mtime_ns

    again = ArtifactCache.open(tmp_path, get_preset("tdmi-tiny"))
    assert build(spec, cache=again).path == first and again.built == []
    assert first.stat().st_mtime_ns == mtime

    first.write_bytes(first.read_bytes()[:100])  # an interrupted write, a full disk
    healed = ArtifactCache.open(tmp_path, get_preset("tdmi-tiny"))
    healed.progress = False
    assert build(spec, cache=healed).path == first and healed.built == ["model-fp32.onnx"]
    import onnx

    onnx.checker.check_model(onnx.load(str(first)))


def test_build_writes_the_asked_path(tmp_path: Path) -> None:
    """Without a cache, ``build`` writes where it is told; missing parent folders are created."""
    from tdmi.export import inspect
    from tdmi.export.pipeline import build

    out = tmp_path / "new" / "deeper" / "m.onnx"
    built = build(ExportSpec(config="tdmi-tiny", verify=False, simplify=False), out, progress=False)
    assert built.path == out and built.export is not None and built.variant is None
    assert inspect(out)["precision"] == "fp32"


@pytest.mark.filterwarnings("ignore:calibrating on the built-in sample clips")
def test_build_a_variant_from_a_given_graph_and_within_a_budget(tmp_path: Path) -> None:
    """``source``: the INT8 step on an existing FP32 graph; ``max_drop``: the searched recipe."""
    from tdmi.export import inspect
    from tdmi.export.pipeline import build

    fp32 = build(ExportSpec(config="tdmi-tiny", verify=False), tmp_path / "fp32.onnx", progress=False).path
    base = {"config": "tdmi-tiny", "precision": "int8", "target": "onnxruntime", "calib_clips": 2}
    plain = build(ExportSpec(**base, op_types=("Conv",)), tmp_path / "a.onnx", source=fp32, progress=False)
    assert plain.export is None and plain.search is None  # nothing exported again
    assert inspect(plain.path)["extra"]["recipe"]["op_types"] == ["Conv"]
    spec = ExportSpec(**base, max_drop=100.0, min_speedup=0.0, eval_clips=2)
    searched = build(spec, tmp_path / "b.onnx", source=fp32, progress=False)
    assert searched.search is not None and searched.search.chosen is not None
    assert inspect(searched.path)["extra"]["recipe"] == searched.search.chosen.recipe


def test_build_needs_an_output_or_a_cache() -> None:
    from tdmi.export.pipeline import build

    with pytest.raises(ExportError, match="output path or a cache"):
        build(ExportSpec(config="tdmi-tiny"))


# ---------------------------------------------------------------------------- output-path policy


def test_prepare_output_creates_missing_parents(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "m.onnx"
    assert prepare_output(out, "--output") == out
    assert out.parent.is_dir() and not out.exists()  # the folder, never a half-written file


def test_prepare_output_refuses_a_folder_and_an_unwritable_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ExportError, match=r"--output .* is a folder"):
        prepare_output(tmp_path, "--output", error=ExportError)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions: make the check see what a user would
            monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != ro)
        with pytest.raises(TdmiError, match="not writable"):
            prepare_output(ro / "m.onnx", "--json")
        assert not (ro / "m.onnx").exists()
    finally:
        ro.chmod(0o755)


def test_check_outputs_and_the_library_share_the_policy(tmp_path: Path) -> None:
    """The CLI's check and the library's writers agree: both create the missing parent folder."""
    check_outputs({"--json": tmp_path / "x" / "r.json"})
    assert (tmp_path / "x").is_dir()
    from tdmi.export import export_onnx

    out = tmp_path / "y" / "m.onnx"
    export_onnx("tdmi-tiny", out, verify=False, simplify=False, progress=False)
    assert out.is_file()
