"""``tdmi-eval``: PoseTrack multi-person AP of a prediction folder, computed as poseval does."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tdmi.cli.common import Verbose, console, main_for
from tdmi.cli.options import JsonOpt
from tdmi.errors import DataError
from tdmi.eval import EvalResult, evaluate
from tdmi.eval.io import MissingPredictions
from tdmi.utils import check_outputs, write_text_atomic

app = typer.Typer(
    add_completion=False,
    help="PoseTrack keypoint AP (poseval protocol) of per-video prediction JSONs against the ground truth.",
)


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.1f}"


def _table(result: EvalResult, per_joint: bool) -> Table:
    table = Table(title="Average Precision (AP), PoseTrack / poseval")
    for name in result.groups:
        table.add_column(name, justify="right")
    table.add_row(*(_fmt(v) for v in result.groups.values()))
    if not per_joint:
        return table
    joints = Table(title="Per joint")
    for col in ("joint", "AP", "precision", "recall", "GT joints", "predicted"):
        joints.add_column(col, justify="left" if col == "joint" else "right")
    for name, ap in result.ap.items():
        joints.add_row(
            name,
            _fmt(ap),
            _fmt(result.precision[name]),
            _fmt(result.recall[name]),
            str(result.counts["gt_joints"][name]),
            str(result.counts["pred_joints"][name]),
        )
    outer = Table.grid()
    outer.add_row(table)
    outer.add_row(joints)
    return outer


@app.command()
def run(
    gt_dir: Annotated[Path, typer.Argument(help="Folder of per-video ground-truth JSONs (annotations/val).")],
    pred_dir: Annotated[
        Path,
        typer.Argument(
            help="Per-video prediction JSONs (GT file names), or a many-video tdmi-infer -o folder."
        ),
    ],
    json_out: JsonOpt = None,
    missing: Annotated[
        MissingPredictions,
        typer.Option("--missing", help="GT video without prediction file: 'error' or 'empty'."),
    ] = "error",
    per_joint: Annotated[
        bool, typer.Option("--per-joint", help="Also print AP/precision/recall per joint.")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Print the Head/Shou/Elb/Wri/Hip/Knee/Ankl/Total AP table."""
    if not gt_dir.exists():
        raise DataError(f"ground-truth folder {gt_dir} does not exist")
    if not pred_dir.is_dir():
        raise DataError(f"prediction folder {pred_dir} does not exist (or is not a folder)")
    # A --json inside the GT or prediction folder must not replace one of the files being scored.
    name = json_out.name if json_out is not None else ""
    check_outputs({"--json": json_out}, {"GT_DIR": gt_dir / name, "PRED_DIR": pred_dir / name})
    result = evaluate(gt_dir, pred_dir, missing=missing, progress=True)
    console.print(_table(result, per_joint))
    c = result.counts
    console.print(
        f"{c['videos']} videos, {c['frames']} frames with people, "
        f"{c['gt_persons']} GT people, {c['pred_persons']} predicted people"
    )
    if c["gt_persons"] == 0:
        console.print(
            f"[yellow]the ground truth in {gt_dir} has no labelled people: every AP is undefined (nan)[/]"
        )
    if c["missing_prediction_files"]:
        console.print(
            f"[yellow]no predictions for {len(c['missing_prediction_files'])} video(s), counted empty[/]"
        )
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(result.to_dict(), indent=2) + "\n")
        console.print(f"wrote {json_out}")


def main() -> None:
    main_for(app, "tdmi-eval")
