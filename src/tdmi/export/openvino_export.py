"""OpenVINO IR (``.xml`` + ``.bin``) from the decomposed FP32 graph: FP32, BF16, or NNCF INT8.

* ``fp32``: the graph as OpenVINO reads it, FP32 weights, inference precision ``f32`` recorded so
  a BF16-capable CPU does not silently run it in BF16 (OpenVINO's default there).
* ``bf16``: the same FP32 weights with inference precision ``bf16`` recorded. Why not BF16 weights:
  IR stores weights as FP32 or FP16 only (``compress_to_fp16`` would round them to FP16, a second,
  different numeric change); OpenVINO's CPU plug-in converts FP32 weights to BF16 when it compiles
  with the BF16 hint, so the recorded hint is the whole difference. On a CPU without BF16 support
  the predictor reports the precision it got (f32).
* ``int8``: NNCF post-training quantization (performance preset) fed by the toolkit's calibration
  clips; a recipe's regions kept in higher precision become NNCF's ignored scope. No inference
  precision is recorded: the layers NNCF left alone run in what the CPU does best (BF16 where it
  has it), and the predictor reports it.

The IR carries the same metadata as the ONNX export (``tdmi.config``, joints, normalisation,
precision, recipe...) in its ``rt_info`` section ``tdmi``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from tdmi.errors import BackendUnavailableError, ExportError
from tdmi.eval.metrics import HeatmapError, compare_heatmaps
from tdmi.export.calibration import CalibrationSet
from tdmi.export.export_spec import OV_PRECISIONS
from tdmi.export.int8_recipes import (
    Int8Recipe,
    describe_calibrator,
    is_temporal_difference,
    names_in,
    ov_ignored_types,
)
from tdmi.export.metadata import metadata_props, parse_metadata
from tdmi.plugins.openvino import (
    KEY_INFERENCE_PRECISION,
    RT_SECTION,
    read_model_checked,
    require_openvino,
    rt_metadata,
)
from tdmi.utils import atomic_path

if TYPE_CHECKING:
    from tdmi.artifacts.onnx_meta import Precision

# The inference precision each IR records (None: OpenVINO's default for the CPU it runs on).
RECORDED_HINT: dict[str, str | None] = {"fp32": "f32", "bf16": "bf16", "int8": None}
FP32_TOLERANCE = 1e-4  # max |heatmap| difference OpenVINO FP32 may show against ONNX Runtime FP32
NNCF_HINT = "INT8 for OpenVINO needs NNCF: pip install 'tdmi-deploy[openvino-int8]'"
Log = Callable[[str], None]


@dataclass
class OpenVINOResult:
    """What was written and how it compares with ONNX Runtime FP32 on the same clips."""

    path: Path
    precision: str  # fp32 | bf16 | int8 (the IR's)
    inference_precision: str  # what OpenVINO compiled it to here (read back)
    error: HeatmapError | None  # against ONNX Runtime FP32 on the decomposed graph (None: not checked)
    seconds: float
    recipe: dict[str, Any] | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    ignored_nodes: int = 0
    search: Any = None  # SearchResult with --max-drop

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["error"] = self.error.to_dict() if self.error is not None else None
        d["search"] = self.search.to_dict() if self.search is not None else None
        return d


def require_nncf() -> Any:
    try:
        import nncf
    except ImportError:
        raise BackendUnavailableError(NNCF_HINT) from None
    return nncf


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs every step and draws progress bars; our summary is what users need (errors still raise)."""
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        nncf_logger.setLevel(level)


def _read_fp32(core: Any, src: Path) -> tuple[Any, dict[str, Any]]:
    """The decomposed FP32 graph as an ``ov.Model`` with its metadata (checked before any work)."""
    model = read_model_checked(core, src)
    meta = parse_metadata(rt_metadata(model))
    if meta["fused"] or meta["precision"] != "fp32":
        raise ExportError(f"{src} is {meta['variant']}: OpenVINO IR starts from the unfused FP32 export")
    if meta["config"].deform_conv != "decomposed":
        raise ExportError(
            f"{src} has the native DeformConv, which OpenVINO cannot read: export it with "
            "`tdmi-export onnx --deform-conv decomposed`"
        )
    return model, meta


def ignored_scope_names(model: Any, recipe: Int8Recipe) -> list[str]:
    """OpenVINO ops NNCF leaves unquantized: the recipe's regions and every temporal difference."""
    names = [op.get_friendly_name() for op in model.get_ordered_ops()]
    keep = names_in(names, recipe.fp32_regions) if recipe.fp32_regions else []
    return list(dict.fromkeys([*keep, *(n for n in names if is_temporal_difference(n))]))


def nncf_quantize(model: Any, clips: np.ndarray, recipe: Int8Recipe, batch: int = 1) -> tuple[Any, int]:
    """NNCF PTQ of ``model`` on ``clips`` with ``recipe``; returns the INT8 model and ignored-op count."""
    if recipe.target != "openvino":
        raise ExportError(f"an OpenVINO INT8 IR needs an openvino recipe, got target {recipe.target!r}")
    nncf = require_nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import (
        AggregatorType,
        RangeEstimatorParameters,
        RangeEstimatorParametersSet,
        StatisticsCollectorParameters,
        StatisticsType,
    )

    if recipe.calibration == "max":
        ranges = RangeEstimatorParametersSet.MINMAX
    else:
        prob = 1.0 - recipe.percentile / 100.0
        ranges = RangeEstimatorParameters(
            min=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN, prob),
            max=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN, prob),
        )
    advanced = AdvancedQuantizationParameters(
        activations_range_estimator_params=ranges,
        weights_quantization_params=QuantizationParameters(per_channel=recipe.per_channel),
    )
    names = ignored_scope_names(model, recipe)
    scope = nncf.IgnoredScope(names=names, types=ov_ignored_types(recipe.op_types), validate=False)
    usable = clips.shape[0] - clips.shape[0] % batch
    if usable < 1:
        raise ExportError(f"calibration needs at least {batch} clip(s), got {clips.shape[0]}")
    items = [np.ascontiguousarray(clips[i : i + batch]) for i in range(0, usable, batch)]
    dataset = nncf.Dataset(items, lambda x: {"frames": x})
    try:
        with _quiet_nncf():
            quantized = nncf.quantize(
                model,
                dataset,
                preset=nncf.QuantizationPreset.PERFORMANCE,
                target_device=nncf.TargetDevice.CPU,
                subset_size=len(items),
                ignored_scope=scope,
                advanced_parameters=advanced,
            )
    except Exception as e:  # NNCF raises its own and plain exceptions
        first = (str(e).splitlines() or [type(e).__name__])[0][:240]
        raise ExportError(f"NNCF INT8 quantization failed: {type(e).__name__}: {first}") from None
    return quantized, len(names)


def save_ir(model: Any, output: Path, props: dict[str, str], inference_precision: str | None) -> None:
    """Stamp ``rt_info`` and write ``.xml`` + ``.bin`` atomically (both or, on failure, neither)."""
    ov = require_openvino()
    if output.suffix.lower() != ".xml":
        raise ExportError(f"an OpenVINO IR is written as a .xml file (its .bin beside it), got {output}")
    for key, value in props.items():
        model.set_rt_info(value, [RT_SECTION, key.removeprefix("tdmi.")])
    model.set_rt_info(
        inference_precision or "default", [RT_SECTION, KEY_INFERENCE_PRECISION.removeprefix("tdmi.")]
    )
    bin_path = output.with_suffix(".bin")
    with (
        atomic_path(bin_path) as tmp_bin,
        atomic_path(output) as tmp_xml,
        tempfile.TemporaryDirectory(prefix="tdmi-ov-", dir=output.parent) as tmp,
    ):
        staged = Path(tmp, output.name)
        ov.save_model(model, str(staged), compress_to_fp16=False)
        os.replace(staged, tmp_xml)
        os.replace(staged.with_suffix(".bin"), tmp_bin)


def check_against_ort(
    src_onnx: Path, output: Path, config: Any, clips: np.ndarray, precision: str
) -> tuple[HeatmapError, str]:
    """The written IR on OpenVINO against the FP32 graph on ONNX Runtime (same clips)."""
    from tdmi.export.ort_ops import run_onnx
    from tdmi.runtime.openvino_backend import OpenVINOPredictor

    reference = run_onnx(src_onnx, clips)
    predictor = OpenVINOPredictor(output)
    with predictor:
        got = predictor.predict(clips)
        used = predictor.inference_precision
    error = compare_heatmaps(reference, got)
    if not error.finite:
        raise ExportError(f"the OpenVINO {precision} IR produces NaN/inf heatmaps: nothing kept")
    if precision == "fp32" and error.max_abs > FP32_TOLERANCE:
        raise ExportError(
            f"OpenVINO FP32 disagrees with ONNX Runtime FP32 (max abs {error.max_abs:.3g} > "
            f"{FP32_TOLERANCE:g}): nothing kept"
        )
    return error, used


def write_ir(
    src_onnx: Path | str,
    output: Path | str,
    precision: str,
    *,
    calib: CalibrationSet | None = None,
    recipe: Int8Recipe | None = None,
    check: bool = True,
    extra: dict[str, Any] | None = None,
) -> OpenVINOResult:
    """IR of ``precision`` from the decomposed FP32 ONNX ``src_onnx``; INT8 needs ``calib``.

    The IR is checked against ONNX Runtime FP32 before it stays on disk (``check``); the INT8
    search's candidates skip that (they are scored against ground truth instead).
    """
    from tdmi.export.onnx_export import example_clips

    t0 = time.perf_counter()
    if precision not in OV_PRECISIONS:
        raise ExportError(f"unknown OpenVINO precision {precision!r}: use {', '.join(OV_PRECISIONS)}")
    src_onnx, output = Path(src_onnx), Path(output)
    if output.suffix.lower() != ".xml":
        raise ExportError(f"an OpenVINO IR is written as a .xml file (its .bin beside it), got {output}")
    ov = require_openvino()
    core = ov.Core()
    model, meta = _read_fp32(core, src_onnx)
    cfg = meta["config"]
    info = dict(meta["extra"]) | dict(extra or {})
    ignored = 0
    if precision == "int8":
        if calib is None:
            raise ExportError(
                "an INT8 IR needs calibration clips (--calib, or the built-in smoke-test clips)"
            )
        if recipe is None:
            from tdmi.export.precision import default_recipe

            recipe = default_recipe("openvino")
        calib.check_fits(cfg)
        batch = model.inputs[0].get_partial_shape()[0]
        b = batch.get_length() if batch.is_static else 1
        model, ignored = nncf_quantize(model, calib.clips, recipe, b)
        info |= {
            "calibration": calib.describe() | {"calibrator": describe_calibrator(recipe)},
            "quantizer": "nncf (OpenVINO)",
            "recipe": recipe.to_dict(),
            "not_quantized_ops": ignored,
        }
    hint = RECORDED_HINT[precision]
    info["openvino"] = {"inference_precision": hint or "default (what the CPU runs best)"}
    ir_precision = cast("Precision", precision)  # one of OV_PRECISIONS, checked above
    props = metadata_props(cfg, precision=ir_precision, target="openvino", batch=meta["batch"], extra=info)
    if not check:
        save_ir(model, output, props, hint)
        return OpenVINOResult(output, precision, hint or "default", None, time.perf_counter() - t0)
    clips = example_clips(cfg, 2 if meta["batch"] in (1, "dynamic") else int(meta["batch"]))
    with tempfile.TemporaryDirectory(prefix="tdmi-ov-check-", dir=output.parent) as tmp:
        staged = Path(tmp, output.name)
        save_ir(model, staged, props, hint)
        error, used = check_against_ort(src_onnx, staged, cfg, clips, precision)
        save_ir(model, output, props, hint)
    return OpenVINOResult(
        path=output,
        precision=precision,
        inference_precision=used,
        error=error,
        seconds=time.perf_counter() - t0,
        recipe=recipe.to_dict() if recipe is not None else None,
        calibration=calib.describe() if calib is not None and precision == "int8" else {},
        ignored_nodes=ignored,
    )
