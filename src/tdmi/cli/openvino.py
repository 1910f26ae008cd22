"""``tdmi-export openvino``: OpenVINO IR (FP32, BF16, NNCF INT8 with the recipe search); thin CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tdmi.artifacts.onnx_meta import Precision
from tdmi.cli.common import Verbose, console, err_console
from tdmi.cli.int8 import _log, candidates_table
from tdmi.cli.options import (
    BatchOpt,
    CalibClipsOpt,
    CalibMethodOpt,
    CalibOpt,
    ExportCheckpointOpt,
    MaxDropOpt,
    MinSpeedupOpt,
    OpTypesOpt,
)
from tdmi.errors import UsageError


def openvino_cmd(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The IR .xml to write (its .bin is written beside it).")
    ],
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="Preset name or config JSON (default: the checkpoint's own)."),
    ] = None,
    checkpoint: ExportCheckpointOpt = None,
    onnx_path: Annotated[
        Path | None,
        typer.Option(
            "--onnx",
            help="Start from this decomposed FP32 ONNX (tdmi-export onnx --deform-conv decomposed) "
            "instead of exporting one.",
        ),
    ] = None,
    batch: BatchOpt = "1",
    precision: Annotated[
        Precision,
        typer.Option(
            "--precision",
            help="fp32 (runs FP32 everywhere), bf16 (FP32 weights, BF16 inference precision recorded) "
            "or int8 (NNCF).",
        ),
    ] = "fp32",
    calib: CalibOpt = None,
    calib_clips: CalibClipsOpt = 16,
    calib_method: CalibMethodOpt = "auto",
    max_drop: MaxDropOpt = None,
    min_speedup: MinSpeedupOpt = 1.0,
    eval_clips: Annotated[
        int, typer.Option("--eval-clips", help="With --max-drop: held-out synthetic clips per candidate.")
    ] = 32,
    op_types: OpTypesOpt = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
    verbose: Verbose = False,
) -> None:
    """Write an OpenVINO IR from the decomposed FP32 graph, checked against ONNX Runtime FP32."""
    from tdmi.export.export_spec import ExportSpec, parse_batch
    from tdmi.export.int8_recipes import parse_op_types
    from tdmi.export.pipeline import build
    from tdmi.utils import check_outputs, write_text_atomic

    if onnx_path is not None and (checkpoint is not None or config is not None):
        raise UsageError("--onnx carries its own config and weights: drop --config/--checkpoint")
    parsed_batch = parse_batch(batch)
    if onnx_path is not None and batch != "1":
        raise UsageError("--onnx keeps the batch form of that file: drop --batch")
    spec = ExportSpec(
        config=None if onnx_path is not None else _config(config, checkpoint),
        checkpoint=checkpoint,
        precision=precision,
        target="openvino",
        deform_conv="decomposed",
        batch=parsed_batch,
        calib=calib,
        calib_clips=calib_clips,
        calib_method=calib_method,
        op_types=parse_op_types(op_types),
        max_drop=max_drop,
        min_speedup=min_speedup if max_drop is not None else None,
        eval_clips=eval_clips,
    )
    check_outputs(
        {"--output": output, "--json": json_path},
        {"--checkpoint": checkpoint, "--calib": calib, "--onnx": onnx_path},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = build(spec, output, source=onnx_path, log=_log)
    for w in caught:
        err_console.print(f"[yellow]warning:[/] {w.message}", markup=True)
    result = built.variant
    assert result is not None  # an IR spec always runs the IR step
    config_name = built.export.config.name if built.export is not None else _onnx_config_name(onnx_path)
    _print_ir(output, config_name, result)
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(result.to_dict(), indent=2, default=str) + "\n")
        console.print(f"wrote {json_path}", markup=False, highlight=False)


def _config(config: str | None, checkpoint: Path | None) -> Any:
    """``--config``, else the checkpoint's own, else the default preset."""
    from tdmi.model.checkpoint import read_checkpoint_config
    from tdmi.spec.config import DEFAULT_PRESET, resolve_config

    if config is not None:
        return resolve_config(config)
    embedded = read_checkpoint_config(checkpoint) if checkpoint is not None else None
    return embedded or resolve_config(DEFAULT_PRESET)


def _onnx_config_name(onnx_path: Path | None) -> str:
    from tdmi.export.metadata import load_onnx_checked, read_metadata

    assert onnx_path is not None
    return str(read_metadata(load_onnx_checked(onnx_path))["config"].name)


def _print_ir(output: Path, config_name: str, result: Any) -> None:
    """What ``openvino`` made: the IR, its check against ORT FP32, and the INT8 recipe and search."""
    console.print(
        f"wrote [bold]{output}[/] + {output.with_suffix('.bin').name} ({config_name}, OpenVINO IR "
        f"{result.precision}; runs here at inference precision {result.inference_precision}) "
        f"in {result.seconds:.1f} s"
    )
    if result.error is not None:
        table = Table(title=f"OpenVINO {result.precision} vs ONNX Runtime FP32 (decomposed graph)")
        for col in ("max abs", "max rel", "kpt agree (tie-aware)", "max kpt dist px"):
            table.add_column(col, justify="right")
        e = result.error
        table.add_row(
            f"{e.max_abs:.3g}",
            f"{e.max_rel:.3g}",
            f"{100 * e.keypoint_agreement:.1f}%",
            f"{e.max_keypoint_dist:.1f}",
        )
        console.print(table)
    if result.recipe is not None:
        console.print(
            f"INT8 recipe: {json.dumps(result.recipe, sort_keys=True)}", markup=False, highlight=False
        )
        smoke = " (SMOKE TEST ONLY)" if result.calibration.get("smoke_only") else ""
        console.print(
            f"calibration: {result.calibration.get('num_clips')} clips from "
            f"{result.calibration.get('source')}{smoke}; ops NNCF left unquantized by the recipe: "
            f"{result.ignored_nodes}",
            markup=False,
            highlight=False,
        )
    if result.search is not None:
        console.print(candidates_table(result.search))
        c = result.search.chosen
        console.print(
            f"chosen: {c.label}: PCK drop {c.drop_pck:+.2f} pts (budget {result.search.max_drop}), "
            f"speed-up over OpenVINO FP32 {c.speedup:.2f}x",
            markup=False,
            highlight=False,
        )


def register_openvino_commands(app: typer.Typer) -> None:
    """Add ``openvino`` to ``tdmi-export``."""
    app.command("openvino")(openvino_cmd)
