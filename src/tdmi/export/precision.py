"""FP16 and INT8 variants of an exported FP32 graph, each built for the runtime that will run it.

* ``fp16-tensorrt``: ModelOpt AutoCast with the real calibration clips deciding which nodes would
  overflow in FP16 (they stay FP32); inputs/outputs stay FP32. ONNX Runtime CPU runs it (to check
  the conversion) but has no FP16 convolution kernels worth timing.
* ``int8-tensorrt``: ModelOpt ONNX PTQ, explicit Q/DQ (entropy or max calibration). Built for
  TensorRT; on ORT CPU it runs slower than FP32, which is fine for checking accuracy.
* ``int8-onnxruntime``: ``onnxruntime.quantization.quantize_static``, QDQ, per-channel INT8 weights,
  UINT8 activations (what ORT fuses into QLinearConv): the fast CPU variant.

All work on the *unfused* graph; ``fuse_temporal_diff`` comes after. The temporal differences are
never quantized: a difference of two quantized features loses most of its few significant bits.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from tdmi.errors import BackendUnavailableError, ExportError
from tdmi.export.calibration import CalibrationSet
from tdmi.export.int8_recipes import (
    PROBE_BYTES,
    ActivationStats,
    Int8Recipe,
    activation_infos,
    activation_probe,
    collect_stats,
    describe_calibrator,
    nodes_in,
    ort_quantize,
    probe_groups,
    ranges_from_stats,
)
from tdmi.export.metadata import check_graph_io, load_onnx_checked, read_metadata, update_metadata
from tdmi.export.onnx_export import HeatmapError, check_writable, compare_heatmaps, example_clips, steps
from tdmi.export.ort_ops import make_session, run_onnx, static_batch
from tdmi.plugins.availability import require_onnxruntime
from tdmi.spec.config import TDMIConfig
from tdmi.utils import atomic_path

# ModelOpt (and its scipy / PuLP / pydantic / omegaconf / ninja tree) is an optional extra: the
# default benchmark and CPU INT8 (--target onnxruntime) run without it.
MODELOPT_HINT = "pip install 'tdmi-deploy[modelopt]' (CPU INT8, --target onnxruntime, works without it)"

Target = Literal["tensorrt", "onnxruntime", "openvino"]
CalibMethod = Literal["entropy", "max", "percentile"]
FP16_MAX_CALIB_CLIPS = 8  # AutoCast keeps every intermediate tensor of every clip in memory...
ACTIVATION_BUDGET = 3 << 30  # ...so it gets as many clips as fit here (W48 384x288: ~2 GiB per clip)
EVAL_CLIPS = 4
DATA_MAX = 512.0  # AutoCast's default: activations beyond this stay FP32 (headroom below FP16's 65504)


@dataclass
class PrecisionResult:
    path: Path
    precision: str
    target: str
    kept_fp32_nodes: list[str]  # FP16: nodes AutoCast left FP32; INT8: compute nodes left unquantized
    error: HeatmapError  # against the FP32 graph, both on ORT CPU
    seconds: float
    calibration: dict[str, Any] = field(default_factory=dict)
    method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["error"] = self.error.to_dict()
        return d


# ------------------------------------------------------------------------------------------ helpers


def _load_fp32(src: Path | str | onnx.ModelProto) -> tuple[onnx.ModelProto, TDMIConfig]:
    model = src if isinstance(src, onnx.ModelProto) else load_onnx_checked(Path(src))
    meta = read_metadata(model)
    check_graph_io(model, meta["config"], "the graph" if isinstance(src, onnx.ModelProto) else src)
    if meta["fused"]:
        raise ExportError(
            "this graph is already fused: convert the unfused FP32 export, then run `tdmi-export fuse`"
        )
    if meta["precision"] != "fp32":
        raise ExportError(f"this graph is already {meta['variant']}: start from the FP32 export")
    return model, meta["config"]


def _diff_node_names(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if "/diff/" in n.name and n.name.startswith("tde/")]


# Kept FP32 in the ONNX Runtime INT8 graph. Measured on a W32 model with peaked heatmaps (trained on
# the built-in synthetic clips): quantizing the heatmap head moved keypoints by up to 37 heatmap px
# (p95); keeping head and RDM gate FP32 brought the p95 deviation to 3.6 px, and restricting
# quantization to Conv/Gemm/MatMul raised exact-argmax agreement from 18 % to 54 %. They are a small
# share of the compute.
ORT_FP32_SCOPES = ("head/", "rdm/")
ORT_QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]


# The calibration each target gets when none is asked for ("auto"); see BENCHMARKS.md, "INT8 recipes".
DEFAULT_CALIBRATION: dict[str, str] = {"onnxruntime": "percentile", "tensorrt": "entropy", "openvino": "max"}


def default_recipe(target: Target, method: str = "auto") -> Int8Recipe:
    """The default recipe for a target: ORT keeps head and RDM FP32 and quantizes Conv/Gemm/MatMul."""
    if method == "auto":
        method = DEFAULT_CALIBRATION[target]
    if target == "onnxruntime":
        return Int8Recipe(
            target="onnxruntime",
            calibration=method,
            fp32_regions=tuple(s.rstrip("/") for s in ORT_FP32_SCOPES),
            op_types=tuple(ORT_QUANTIZED_OPS),
        )
    if target == "openvino":
        # NNCF's own op set and nothing kept in higher precision: what a new user gets from NNCF
        # (issue 21 measured it at +0.73 PCK points on W32); --max-drop searches for more.
        return Int8Recipe(target="openvino", calibration=method, fp32_regions=(), op_types=())
    return Int8Recipe(target="tensorrt", calibration=method, fp32_regions=(), op_types=())


def _eval_clips(config: TDMIConfig, model: onnx.ModelProto) -> np.ndarray:
    b = static_batch(model) or 1
    n = b * -(-EVAL_CLIPS // b)
    return example_clips(config, n)


def _calib_clips(calib: CalibrationSet, model: onnx.ModelProto, limit: int | None = None) -> np.ndarray:
    b = static_batch(model) or 1
    n = calib.num_clips if limit is None else min(limit, calib.num_clips)
    n -= n % b
    if n < 1:
        raise ExportError(
            f"the graph takes batches of {b} clips but the calibration set has only {calib.num_clips}"
        )
    return calib.clips[:n]


def _dim_at_batch_1(dim: onnx.TensorShapeProto.Dimension) -> int:
    """A dimension with the batch set to 1; the exporter writes symbolic ones like ``3*batch``."""
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    m = re.fullmatch(r"(?:floor\()?\s*(?:([0-9.]+)\s*\*\s*)?batch\s*\)?", dim.dim_param)
    return max(1, math.floor(float(m.group(1) or 1))) if m else 1


def activation_bytes_per_clip(model: onnx.ModelProto) -> int:
    """Bytes of all live intermediate tensors for one clip (shapes from the exporter, else inferred)."""
    produced = {o for n in model.graph.node for o in n.output}
    infos = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    infos.update({vi.name: vi for vi in model.graph.value_info})  # the exporter's shapes are exact
    batch = static_batch(model) or 1
    total = 0
    for name in produced:
        vi = infos.get(name)
        if vi is None or not vi.type.tensor_type.HasField("shape") or not vi.type.tensor_type.elem_type:
            continue
        t = vi.type.tensor_type
        size = int(np.prod([_dim_at_batch_1(d) for d in t.shape.dim], dtype=np.int64))
        total += size * onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
    return max(1, total // batch)


def clips_within_budget(model: onnx.ModelProto, wanted: int, budget: int = ACTIVATION_BUDGET) -> int:
    return max(1, min(wanted, budget // activation_bytes_per_clip(model)))


def tensor_absmax(model: onnx.ModelProto, clips: np.ndarray) -> dict[str, float]:
    """Largest |value| of every float tensor over all ``clips``, one batch and one probe group at a time."""
    batch = static_batch(model) or 1
    peak: dict[str, float] = {}
    for g, group in enumerate(probe_groups(activation_infos(model), batch, PROBE_BYTES)):
        sess = make_session(activation_probe(model, group), arena=False)
        out_names = [o.name for o in sess.get_outputs()] if g == 0 else [vi.name for vi in group]
        peak.update(dict.fromkeys(out_names, 0.0))
        for i in range(0, clips.shape[0] - clips.shape[0] % batch, batch):
            outs = sess.run(out_names, {"frames": clips[i : i + batch]})
            for name, arr in zip(out_names, outs, strict=True):
                if arr.size:
                    m = float(np.abs(arr).max()) if np.isfinite(arr).all() else float("inf")
                    peak[name] = max(peak[name], m)
            del outs
        del sess
    return peak


def overflow_nodes(model: onnx.ModelProto, absmax: dict[str, float], data_max: float) -> list[str]:
    """Nodes with an activation input or output beyond ``data_max`` (AutoCast's I/O range rule)."""
    inits = {i.name for i in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if any(absmax.get(t, 0.0) > data_max for t in [*n.input, *n.output] if t and t not in inits)
    ]


@contextlib.contextmanager
def _quiet_tools() -> Iterator[None]:
    """ModelOpt and ORT log every step and draw tqdm bars; our own summary is what users need.

    Real failures still surface: they raise, and we turn them into one-line errors.
    """
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with ModelOpt; without it there is nothing to silence
        tqdm = None
    original = vars(tqdm).get("__init__") if tqdm is not None else None  # the raw descriptor
    if tqdm is not None:
        tqdm.__init__ = functools.partialmethod(tqdm.__init__, disable=True)
    logging.disable(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)
        if tqdm is not None:
            if original is None:
                del tqdm.__init__
            else:
                tqdm.__init__ = original


def _float_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types: dict[str, int] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    for n in inferred.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            types[n.output[0]] = n.attribute[0].t.data_type
    return types


def kept_fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Compute nodes whose floating-point outputs stayed FP32 (casts and shape plumbing excluded)."""
    types = _float_types(model)
    skip = {"Cast", "Constant", "Shape", "QuantizeLinear", "DequantizeLinear"}
    return [
        n.name
        for n in model.graph.node
        if n.op_type not in skip and any(types.get(o) == onnx.TensorProto.FLOAT for o in n.output)
    ]


def unquantized_nodes(model: onnx.ModelProto) -> list[str]:
    """Weighted compute nodes (Conv, Gemm, DeformConv, MatMul) whose weights are not Q/DQ (stay float)."""
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    heavy = {"Conv", "ConvTranspose", "Gemm", "MatMul", "DeformConv"}
    return [n.name for n in model.graph.node if n.op_type in heavy and n.input[1] not in dq_outputs]


def deformconv_type_conflicts(model: onnx.ModelProto) -> list[str]:
    """DeformConv nodes whose float inputs mix FP16 and FP32 (TensorRT rejects those)."""
    types = _float_types(model)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    bad = []
    for n in model.graph.node:
        if n.op_type == "DeformConv":
            kinds = {types.get(i) for i in n.input if i and types.get(i) in floats}
            if len(kinds) > 1:
                bad.append(n.name)
    return bad


def _finish(
    converted: onnx.ModelProto,
    src_model: onnx.ModelProto,
    output: Path,
    *,
    precision: str,
    target: str,
    extra: dict[str, Any],
    config: TDMIConfig,
) -> HeatmapError:
    """Stamp metadata, check against FP32 on ORT CPU, write atomically (nothing on failure)."""
    del converted.metadata_props[:]
    converted.metadata_props.extend(src_model.metadata_props)
    update_metadata(converted, precision=precision, target=target, extra=extra)
    clips = _eval_clips(config, src_model)
    reference = run_onnx(src_model, clips)
    with atomic_path(output) as tmp:
        onnx.save_model(converted, str(tmp), save_as_external_data=False)
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as e:
            raise ExportError(
                f"the {precision} graph fails the ONNX checker: {str(e).splitlines()[0]}"
            ) from None
        error = compare_heatmaps(reference, run_onnx(tmp, clips))
        if not error.finite:
            raise ExportError(
                f"the {precision} graph produces NaN/inf heatmaps on real clips: nothing written"
            )
    return error


def _require_autocast() -> Any:
    """ModelOpt AutoCast's ``convert_to_mixed_precision``, or the extra that installs it."""
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError as e:
        raise BackendUnavailableError(
            f"FP16 conversion uses NVIDIA ModelOpt AutoCast, which is not installed ({e}): {MODELOPT_HINT}"
        ) from None
    return convert_to_mixed_precision


def _autocast_until_consistent(
    convert: Any, src_path: Path, data_path: Path, excluded: list[str], data_max: float, step: Any
) -> onnx.ModelProto:
    """AutoCast FP16, run again once with the DeformConv nodes it left with mixed input types kept FP32.

    TensorRT's DeformConv takes one type for all its inputs; AutoCast decides per tensor, so a first
    pass can feed one node FP16 and FP32 at once. ``excluded`` grows with the nodes kept FP32.
    """
    converted: onnx.ModelProto | None = None
    for _attempt in range(2):
        step("AutoCast FP16 (running calibration clips)")
        try:
            with _quiet_tools():
                converted = convert(
                    onnx_path=str(src_path),
                    low_precision_type="fp16",
                    nodes_to_exclude=[f"^{re.escape(n)}$" for n in excluded] or None,
                    keep_io_types=True,
                    calibration_data=str(data_path),
                    data_max=data_max,
                    providers=["cpu"],
                )
        except ModuleNotFoundError as e:  # AutoCast's own imports (polygraphy) come with the extra
            raise ExportError(
                f"AutoCast FP16 conversion needs {e.name!r}, which is not installed: {MODELOPT_HINT}"
            ) from e
        except Exception as e:  # AutoCast raises assertion/value errors from deep inside
            raise ExportError(f"AutoCast FP16 conversion failed: {type(e).__name__}: {e}") from e
        conflicts = deformconv_type_conflicts(converted)
        if not conflicts:
            break
        excluded.extend(conflicts)  # one type for all DeformConv inputs: keep such nodes FP32
    else:
        raise ExportError(f"DeformConv nodes still mix FP16 and FP32 inputs: {conflicts}")
    assert converted is not None
    return converted


# ------------------------------------------------------------------------------------------- public


def convert_fp16(
    src: Path | str | onnx.ModelProto,
    output: Path | str,
    calib: CalibrationSet,
    *,
    data_max: float = DATA_MAX,
    max_calib_clips: int = FP16_MAX_CALIB_CLIPS,
    progress: bool = True,
) -> PrecisionResult:
    """FP16 for TensorRT via ModelOpt AutoCast, overflow decided on ``calib``'s real clips."""
    t0 = time.perf_counter()
    output = Path(output)
    check_writable(output)
    require_onnxruntime()
    model, cfg = _load_fp32(src)
    calib.check_fits(cfg)
    convert = _require_autocast()
    clips = _calib_clips(calib, model, clips_within_budget(model, max_calib_clips))
    excluded: list[str] = []
    with steps(progress, total=4) as step, tempfile.TemporaryDirectory(prefix="tdmi-fp16-") as tmpdir:
        # AutoCast sees the clips that fit in memory; every clip of the set is screened here, one
        # batch at a time, and whatever would overflow on any of them is kept FP32 as well.
        step(f"screening {calib.num_clips} calibration clips for FP16 overflow")
        all_clips = _calib_clips(calib, model)
        overflow = overflow_nodes(model, tensor_absmax(model, all_clips), data_max)
        excluded.extend(overflow)
        src_path, data_path = Path(tmpdir, "fp32.onnx"), Path(tmpdir, "calib.npz")
        onnx.save_model(model, str(src_path), save_as_external_data=False)
        np.savez(data_path, frames=clips)
        converted = _autocast_until_consistent(convert, src_path, data_path, excluded, data_max, step)
        kept = kept_fp32_nodes(converted)
        step("checking against FP32 on ONNX Runtime CPU")
        extra = {
            "calibration": calib.describe() | {"clips_used": int(clips.shape[0])},
            "kept_fp32_nodes": kept,
            "autocast": {
                "data_max": data_max,
                "keep_io_types": True,
                "overflow_screened_fp32": overflow,
                "forced_fp32": excluded,
                "clips_screened": int(all_clips.shape[0]),
            },
        }
        error = _finish(
            converted, model, output, precision="fp16", target="tensorrt", extra=extra, config=cfg
        )
    return PrecisionResult(
        path=output,
        precision="fp16",
        target="tensorrt",
        kept_fp32_nodes=kept,
        error=error,
        seconds=time.perf_counter() - t0,
        calibration=calib.describe(),
    )


@contextlib.contextmanager
def _restore_ort_quantization() -> Iterator[None]:
    """ModelOpt monkey-patches ORT's calibrators process-wide and never undoes it; undo it ourselves.

    Without this, an ``int8-onnxruntime`` run after an ``int8-tensorrt`` one in the same process
    calibrates with ModelOpt's patched collectors and fails.
    """
    from onnxruntime.quantization import base_quantizer, calibrate, qdq_quantizer

    classes = [
        obj
        for mod in (calibrate, base_quantizer, qdq_quantizer)
        for obj in vars(mod).values()
        if isinstance(obj, type) and obj.__module__ == mod.__name__
    ]
    saved_classes = {cls: dict(vars(cls)) for cls in classes}
    saved_modules = {mod: dict(vars(mod)) for mod in (calibrate, base_quantizer, qdq_quantizer)}
    try:
        yield
    finally:
        for cls, attrs in saved_classes.items():
            for name in [n for n in vars(cls) if n not in attrs]:
                delattr(cls, name)
            for name, value in attrs.items():
                if vars(cls).get(name) is not value and name not in ("__dict__", "__weakref__"):
                    setattr(cls, name, value)
        for mod, attrs in saved_modules.items():
            for name, value in attrs.items():
                if getattr(mod, name, None) is not value:
                    setattr(mod, name, value)


def _modelopt_int8(
    src_path: Path,
    out_path: Path,
    clips: np.ndarray,
    method: CalibMethod,
    exclude: list[str],
    op_types: Sequence[str] = (),
) -> None:
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as e:
        raise BackendUnavailableError(
            f"INT8 for TensorRT uses NVIDIA ModelOpt, which is not installed ({e}): {MODELOPT_HINT}"
        ) from None
    try:
        with _quiet_tools(), _restore_ort_quantization():
            quantize(
                onnx_path=str(src_path),
                quantize_mode="int8",
                calibration_data={"frames": clips},
                calibration_method=method,
                calibration_eps=["cpu"],
                nodes_to_exclude=[f"^{re.escape(n)}$" for n in exclude] or None,
                op_types_to_quantize=list(op_types) or None,
                output_path=str(out_path),
                high_precision_dtype="fp32",
                log_level="ERROR",
            )
    except Exception as e:  # ModelOpt raises a variety of plain exceptions
        raise ExportError(f"ModelOpt INT8 quantization failed: {type(e).__name__}: {e}") from e


def quantize_int8(
    src: Path | str | onnx.ModelProto,
    output: Path | str,
    calib: CalibrationSet,
    *,
    target: Target,
    method: str = "auto",
    progress: bool = True,
    recipe: Int8Recipe | None = None,
    stats: ActivationStats | None = None,
) -> PrecisionResult:
    """INT8 Q/DQ graph for ``target`` (``tensorrt``: ModelOpt; ``onnxruntime``: ORT static QDQ).

    ``recipe`` (see :mod:`tdmi.export.int8_recipes`) overrides ``target``/``method``: regions kept
    FP32, range method, per-channel weights, A8 or A16 activations. For ONNX Runtime the ranges
    come from our own histograms (``stats``, collected here when not given: the sensitivity search
    collects them once for all its candidates).
    """
    t0 = time.perf_counter()
    if recipe is None:
        if target not in ("tensorrt", "onnxruntime"):
            raise ExportError(f"unknown INT8 target {target!r}: use tensorrt or onnxruntime")
        if method not in ("auto", "entropy", "max", "percentile"):
            raise ExportError(f"unknown calibration method {method!r}: use entropy, percentile or max")
        if target == "tensorrt" and method == "percentile":
            raise ExportError("ModelOpt calibrates TensorRT graphs by max or entropy, not percentile")
        recipe = default_recipe(target, method)
    # Int8Recipe keeps target/calibration as str (JSON round trip); its constructor checks the values.
    target, method = recipe.target, recipe.calibration  # type: ignore[assignment]  # checked values
    if target == "openvino":
        raise ExportError(
            "OpenVINO INT8 is an IR made by NNCF, not a Q/DQ ONNX graph: use `tdmi-export openvino "
            "--precision int8` (tdmi.export.openvino_export.write_ir)"
        )
    output = Path(output)
    check_writable(output)
    require_onnxruntime()
    model, cfg = _load_fp32(src)
    calib.check_fits(cfg)
    clips = _calib_clips(calib, model)
    exclude = list(dict.fromkeys(_diff_node_names(model) + nodes_in(model, recipe.fp32_regions)))
    with steps(progress, total=2) as step, tempfile.TemporaryDirectory(prefix="tdmi-int8-") as tmpdir:
        src_path, out_path = Path(tmpdir, "fp32.onnx"), Path(tmpdir, "int8.onnx")
        onnx.save_model(model, str(src_path), save_as_external_data=False)
        step(f"INT8 calibration for {target} ({method}, {clips.shape[0]} clips)")
        if target == "tensorrt":
            _modelopt_int8(src_path, out_path, clips, method, exclude, recipe.op_types)  # type: ignore[arg-type]  # see above
        else:
            if stats is None:
                stats = collect_stats(model, clips, static_batch(model) or 1)
            ranges = ranges_from_stats(stats, recipe.calibration, recipe.percentile)  # type: ignore[arg-type]  # see above
            with _quiet_tools():
                ort_quantize(src_path, out_path, ranges, recipe, exclude)
        if not out_path.is_file():
            raise ExportError(f"INT8 quantization for {target} produced no file")
        quantized = onnx.load(str(out_path))
        step("checking against FP32 on ONNX Runtime CPU")
        extra = {
            "calibration": calib.describe()
            | {
                "clips_used": int(clips.shape[0]),
                "method": method,
                "calibrator": describe_calibrator(recipe),
            },
            "quantizer": "modelopt" if target == "tensorrt" else "onnxruntime.quantization (QDQ)",
            "recipe": recipe.to_dict(),
            "not_quantized": exclude,
        }
        error = _finish(quantized, model, output, precision="int8", target=target, extra=extra, config=cfg)
    return PrecisionResult(
        path=output,
        precision="int8",
        target=target,
        kept_fp32_nodes=unquantized_nodes(quantized),
        error=error,
        seconds=time.perf_counter() - t0,
        calibration=calib.describe(),
        method=method,
    )
