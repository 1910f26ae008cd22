"""``tdmi-export int8-sensitivity`` and the ``--max-drop`` INT8 recipe search: thin CLI over the library."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tdmi.artifacts.onnx_meta import Granularity, Int8Target
from tdmi.cli.common import Verbose, console, err_console
from tdmi.cli.options import CalibClipsOpt, CalibMethodOpt, CalibOpt, MinSpeedupOpt, OpTypesOpt


def _log(msg: str) -> None:
    err_console.print(msg, markup=False, highlight=False)


def print_recipe(final: Any, search: Any) -> None:
    from tdmi.export.metadata import load_onnx_checked, read_metadata

    extra = read_metadata(load_onnx_checked(Path(final.path))).get("extra", {})
    recipe = extra.get("recipe")
    if recipe:
        console.print(f"INT8 recipe: {json.dumps(recipe, sort_keys=True)}", markup=False, highlight=False)
    calibrator = extra.get("calibration", {}).get("calibrator")
    if calibrator:
        console.print(f"calibrator: {calibrator}", markup=False, highlight=False)
    if search is not None:
        console.print(candidates_table(search))
        if search.chosen is not None:
            c = search.chosen
            console.print(
                f"chosen: {c.label}: PCK drop {c.drop_pck:+.2f} pts (budget {search.max_drop}), "
                f"speed-up {_x(c.speedup)}",
                markup=False,
                highlight=False,
            )


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}x"


def candidates_table(search: Any) -> Table:
    table = Table(title=f"INT8 recipes tried ({search.target}; FP32 PCK {search.fp32_pck:.2f})")
    for col in ("recipe", "PCK", "drop", "drop 95% CI", "OKS AP", "speed-up", "fits"):
        table.add_column(col, justify="left" if col == "recipe" else "right")
    for c in search.candidates:
        table.add_row(
            c.label,
            f"{c.pck:.2f}",
            f"{c.drop_pck:+.2f}",
            f"{c.drop_pck_ci[0]:+.2f}…{c.drop_pck_ci[1]:+.2f}",
            f"{c.oks_ap:.2f}",
            _x(c.speedup),
            "yes" if c.meets_budget else "no",
        )
    return table


def int8_sensitivity_cmd(
    src: Annotated[Path, typer.Argument(help="The unfused FP32 ONNX file written by tdmi-export.")],
    target: Annotated[
        Int8Target,
        typer.Option(
            "--target",
            help="onnxruntime (timed), openvino (NNCF IR, timed on OpenVINO; give the decomposed "
            "FP32 ONNX) or tensorrt (accuracy only).",
        ),
    ] = "onnxruntime",
    calib: CalibOpt = None,
    calib_clips: CalibClipsOpt = 8,
    calib_method: CalibMethodOpt = "auto",
    granularity: Annotated[
        Granularity,
        typer.Option("--granularity", help="block (stage, TDE stage, cascade, RDM, head) or node."),
    ] = "block",
    eval_clips: Annotated[
        int, typer.Option("--eval-clips", help="Held-out synthetic clips scored per candidate.")
    ] = 32,
    rounds: Annotated[int, typer.Option("--rounds", help="Paired timing rounds per candidate.")] = 5,
    max_drop: Annotated[
        float | None,
        typer.Option("--max-drop", help="Also search the recipe that fits this PCK-point budget."),
    ] = None,
    min_speedup: MinSpeedupOpt = 1.0,
    op_types: OpTypesOpt = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON.")] = None,
    verbose: Verbose = False,
) -> None:
    """Quantize one region at a time and rank the regions by PCK loss and latency gain."""
    from tdmi.export.int8_recipes import parse_op_types
    from tdmi.export.int8_search import sensitivity_study
    from tdmi.utils import check_outputs, write_text_atomic

    check_outputs({"--json": json_path}, {"FP32_ONNX": src, "--calib": calib})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = sensitivity_study(
            src,
            target,
            calib,
            calib_clips,
            calib_method,
            parse_op_types(op_types),
            eval_clips,
            granularity=granularity,
            rounds=rounds,
            log=_log,
        )
    for w in caught:
        err_console.print(f"[yellow]warning:[/] {w.message}", markup=True)
    console.print(_sensitivity_table(study.rows, target, study.base.calibration))
    out = study.to_dict()
    if max_drop is not None:
        speedup = 1.0 if min_speedup is None else min_speedup
        out["search"] = _search(study, max_drop, calib_method, granularity, rounds, speedup)
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(out, indent=2) + "\n")
        console.print(f"wrote {json_path}", markup=False, highlight=False)


def _search(
    study: Any, max_drop: float, calib_method: str, granularity: Granularity, rounds: int, min_speedup: float
) -> dict[str, Any]:
    """``--max-drop``: the recipe search on top of the measured sensitivity rows, printed."""
    from tdmi.export.int8_search import search

    found = search(
        study.src,
        study.calib,
        study.data,
        target=study.target,
        max_drop=max_drop,
        calibrations=None if calib_method == "auto" else [calib_method],
        granularity=granularity,
        timing_rounds=rounds,
        log=_log,
        known_sensitivity=study.rows,
        min_speedup=min_speedup,
        op_types=study.op_types,
    )
    console.print(candidates_table(found))
    if found.chosen is not None:
        console.print(f"chosen: {found.chosen.label}", markup=False, highlight=False)
    else:
        console.print(found.note, markup=False, highlight=False)
    return found.to_dict()


def _sensitivity_table(rows: list[Any], target: str, calibration: str) -> Table:
    table = Table(title=f"INT8 sensitivity ({target}, {calibration}): one region quantized at a time")
    for col in ("region", "nodes", "PCK drop", "drop 95% CI", "speed-up over FP32"):
        table.add_column(col, justify="left" if col == "region" else "right")
    for r in rows:
        ci = r.result.drop_pck_ci if r.result else None
        table.add_row(
            r.region,
            str(r.nodes),
            f"{r.drop_pck:+.2f}",
            "—" if ci is None else f"{ci[0]:+.2f}…{ci[1]:+.2f}",
            _x(r.speedup),
        )
    return table


def register_int8_commands(app: typer.Typer) -> None:
    """Add ``int8-sensitivity`` to ``tdmi-export``."""
    app.command("int8-sensitivity")(int8_sensitivity_cmd)
