"""``tdmi-export openvino`` end to end: the decomposed FP32 graph (exported here, or given), then
the IR at the asked precision, or the INT8 recipe the search finds within ``--max-drop``.

Kept apart from ``openvino_export`` (one IR from one recipe) because the search builds its
candidates with that module: the pipeline sits above both.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tdmi.errors import ExportError
from tdmi.export.calibration import CalibrationSet
from tdmi.export.int8_recipes import Int8Recipe
from tdmi.export.openvino_export import OV_PRECISIONS, Log, OpenVINOResult, _read_fp32, require_nncf, write_ir
from tdmi.plugins.openvino import require_openvino


def export_openvino(
    config: Any,
    output: Path | str,
    *,
    checkpoint: Path | str | None = None,
    onnx_path: Path | str | None = None,
    precision: str = "fp32",
    batch: int | str = 1,
    calib: CalibrationSet | None = None,
    method: str = "auto",
    max_drop: float | None = None,
    eval_clips: int = 32,
    min_speedup: float = 1.0,
    op_types: Sequence[str] | None = None,
    progress: bool = True,
    log: Log | None = None,
) -> OpenVINOResult:
    """``tdmi-export openvino``: the decomposed FP32 ONNX (exported and verified here, or
    ``onnx_path``), then the IR of ``precision``; INT8 with ``max_drop`` runs the recipe search."""

    t0 = time.perf_counter()
    output = Path(output)
    if precision not in OV_PRECISIONS:
        raise ExportError(f"unknown OpenVINO precision {precision!r}: use {', '.join(OV_PRECISIONS)}")
    if precision != "int8" and (max_drop is not None or op_types is not None):
        raise ExportError("--max-drop and --op-types apply to --precision int8 only")
    if output.suffix.lower() != ".xml":
        raise ExportError(f"an OpenVINO IR is written as a .xml file (its .bin beside it), got {output}")
    from tdmi.export.onnx_export import check_writable

    check_writable(output)
    require_openvino()
    if precision == "int8":
        require_nncf()
        if calib is None:
            raise ExportError("--precision int8 needs calibration clips")
    with tempfile.TemporaryDirectory(prefix="tdmi-ov-") as tmp:
        if onnx_path is None:
            from tdmi.export.onnx_export import export_onnx

            src = Path(tmp, "fp32-decomposed.onnx")
            export_onnx(
                config, src, checkpoint=checkpoint, batch=batch, deform_conv="decomposed", progress=progress
            )
        else:
            src = Path(onnx_path)
        if precision != "int8":
            result = write_ir(src, output, precision)
        elif max_drop is None:
            from tdmi.export.precision import default_recipe

            recipe = default_recipe("openvino", method)
            if op_types is not None:
                recipe = dataclasses.replace(recipe, op_types=tuple(op_types))
            result = write_ir(src, output, "int8", calib=calib, recipe=recipe)
        else:
            from tdmi.eval.synthetic import synthetic_set
            from tdmi.export.int8_search import search

            model, meta = _read_fp32(require_openvino().Core(), src)
            del model
            found = search(
                src,
                calib,  # type: ignore[arg-type]
                synthetic_set(meta["config"], eval_clips),
                target="openvino",
                max_drop=max_drop,
                calibrations=None if method == "auto" else [method],
                log=log,
                min_speedup=min_speedup,
                op_types=op_types,
            )
            if found.chosen is None:
                raise ExportError(f"{found.note}: nothing written; raise --max-drop or keep FP32/BF16")
            recipe = Int8Recipe.from_dict(found.chosen.recipe)
            result = write_ir(
                src,
                output,
                "int8",
                calib=calib,
                recipe=recipe,
                extra={"search": {"max_drop": max_drop, "chosen": found.chosen.to_dict()}},
            )
            result.search = found
    result.seconds = time.perf_counter() - t0
    return result
