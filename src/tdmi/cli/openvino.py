"""``tdmi-export openvino``: OpenVINO IR (FP32, BF16, NNCF INT8 with the recipe search); thin CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tdmi.cli.common import Verbose, console, err_console
from tdmi.cli.int8 import OP_TYPES_HELP, _log, candidates_table
from tdmi.errors import UsageError


def register_openvino_commands(app: typer.Typer) -> None:
    """Add ``openvino`` to ``tdmi-export``."""

    @app.command("openvino")
    def openvino_cmd(
        output: Annotated[
            Path, typer.Option("--output", "-o", help="The IR .xml to write (its .bin is written beside it).")
        ],
        config: Annotated[
            str | None,
            typer.Option(
                "--config", "-c", help="Preset name or config JSON (default: the checkpoint's own)."
            ),
        ] = None,
        checkpoint: Annotated[
            Path | None, typer.Option("--checkpoint", help="TDMI checkpoint (omit: random weights).")
        ] = None,
        onnx_path: Annotated[
            Path | None,
            typer.Option(
                "--onnx",
                help="Start from this decomposed FP32 ONNX (tdmi-export onnx --deform-conv decomposed) "
                "instead of exporting one.",
            ),
        ] = None,
        batch: Annotated[
            str, typer.Option("--batch", help="Fixed batch size N, or 'dynamic' (Triton's batcher).")
        ] = "1",
        precision: Annotated[
            str,
            typer.Option(
                "--precision",
                help="fp32 (runs FP32 everywhere), bf16 (FP32 weights, BF16 inference precision recorded) "
                "or int8 (NNCF).",
            ),
        ] = "fp32",
        calib: Annotated[
            Path | None,
            typer.Option(
                "--calib", help="INT8: PoseTrack folder or calibration .npz (omit: smoke-test clips)."
            ),
        ] = None,
        calib_clips: Annotated[int, typer.Option("--calib-clips", help="INT8: calibration clips.")] = 16,
        calib_method: Annotated[
            str, typer.Option("--calib-method", help="INT8 ranges: max or percentile (auto: max).")
        ] = "auto",
        max_drop: Annotated[
            float | None,
            typer.Option(
                "--max-drop",
                help="INT8: search the recipe (regions kept in higher precision via NNCF's ignored scope, "
                "ranges, per-channel, op types) whose PCK drop vs FP32 on held-out synthetic clips stays "
                "within this many points; fastest wins.",
            ),
        ] = None,
        min_speedup: Annotated[
            float,
            typer.Option("--min-speedup", help="With --max-drop: only recipes this much faster than FP32."),
        ] = 1.0,
        eval_clips: Annotated[
            int, typer.Option("--eval-clips", help="With --max-drop: held-out synthetic clips per candidate.")
        ] = 32,
        op_types: Annotated[str | None, typer.Option("--op-types", help=OP_TYPES_HELP)] = None,
        json_path: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
        verbose: Verbose = False,
    ) -> None:
        """Write an OpenVINO IR from the decomposed FP32 graph, checked against ONNX Runtime FP32."""
        from tdmi.export.calibration import load_calibration
        from tdmi.export.int8_recipes import check_op_types, parse_op_types
        from tdmi.export.openvino_export import OV_PRECISIONS
        from tdmi.export.openvino_pipeline import export_openvino
        from tdmi.model.checkpoint import read_checkpoint_config
        from tdmi.spec.config import DEFAULT_PRESET, resolve_config
        from tdmi.utils import check_outputs, write_text_atomic

        if precision not in OV_PRECISIONS:
            raise UsageError(f"--precision must be {', '.join(OV_PRECISIONS)}, got {precision!r}")
        if calib_method not in ("auto", "max", "percentile"):
            raise UsageError(f"--calib-method must be auto, max or percentile (NNCF), got {calib_method!r}")
        if precision != "int8" and (max_drop is not None or op_types is not None or calib is not None):
            raise UsageError("--calib, --max-drop and --op-types apply to --precision int8 only")
        if max_drop is not None and max_drop < 0:
            raise UsageError(f"--max-drop must be 0 or more PCK points, got {max_drop}")
        if calib_clips < 1 or eval_clips < 1:
            raise UsageError("--calib-clips and --eval-clips must be positive")
        if onnx_path is not None and (checkpoint is not None or config is not None):
            raise UsageError("--onnx carries its own config and weights: drop --config/--checkpoint")
        if batch != "dynamic" and not (batch.isdigit() and int(batch) >= 1):
            raise UsageError(f"--batch must be a positive integer or 'dynamic', got {batch!r}")
        if onnx_path is not None and batch != "1":
            raise UsageError("--onnx keeps the batch form of that file: drop --batch")
        batch_spec: int | str = batch if batch == "dynamic" else int(batch)
        ops = parse_op_types(op_types)
        if ops is not None:
            check_op_types(ops, "openvino")
        check_outputs(
            {"--output": output, "--json": json_path},
            {"--checkpoint": checkpoint, "--calib": calib, "--onnx": onnx_path},
        )
        if onnx_path is not None:
            from tdmi.export.metadata import load_onnx_checked, read_metadata

            cfg = read_metadata(load_onnx_checked(onnx_path))["config"]
        elif config is not None:
            cfg = resolve_config(config)
        else:
            embedded = read_checkpoint_config(checkpoint) if checkpoint is not None else None
            cfg = embedded or resolve_config(DEFAULT_PRESET)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cs = load_calibration(cfg, calib, calib_clips) if precision == "int8" else None
            result = export_openvino(
                cfg if onnx_path is None else None,
                output,
                checkpoint=checkpoint,
                onnx_path=onnx_path,
                precision=precision,
                batch=batch_spec,
                calib=cs,
                method=calib_method,
                max_drop=max_drop,
                eval_clips=eval_clips,
                min_speedup=min_speedup,
                op_types=ops,
                log=_log,
            )
        for w in caught:
            err_console.print(f"[yellow]warning:[/] {w.message}", markup=True)
        console.print(
            f"wrote [bold]{output}[/] + {output.with_suffix('.bin').name} ({cfg.name}, OpenVINO IR "
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
        if json_path is not None:
            write_text_atomic(json_path, json.dumps(result.to_dict(), indent=2, default=str) + "\n")
            console.print(f"wrote {json_path}", markup=False, highlight=False)
