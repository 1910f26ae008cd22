"""``tdmi-export``: PyTorch TDMI -> checked ONNX (FP32/FP16/INT8), inspection, fusion, calibration sets."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from tdmi.artifacts.onnx_meta import DeformConvForm, Precision, Target
from tdmi.cli.common import (
    Verbose,
    check_input_paths,
    console,
    err_console,
    main_for,
    preset_or_json,
)
from tdmi.cli.int8 import _log, register_int8_commands
from tdmi.cli.openvino import register_openvino_commands
from tdmi.cli.options import (
    BatchOpt,
    CalibClipsOpt,
    CalibMethodOpt,
    CalibOpt,
    ConfigOpt,
    ExportCheckpointOpt,
    InstancesOpt,
    MaxBatchOpt,
    MaxDropOpt,
    MaxQueueDelayOpt,
    MinSpeedupOpt,
    OpTypesOpt,
    PoseRefineOpt,
    PoseTrackBoxesOpt,
    PoseTrackSplitOpt,
    PreferredBatchOpt,
    serve_settings,
)
from tdmi.errors import UsageError
from tdmi.utils import check_outputs

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Export TDMI to ONNX (FP32/FP16/INT8), inspect files, fuse TemporalDiff, build calibration sets.",
)


DEFAULT_TARGET_NOTE = {
    "int8": "INT8 target: tensorrt (the default; --target onnxruntime for the fast CPU variant)",
    "fp16": "FP16 target: tensorrt (the only FP16 target)",
}


def require_export(what: str) -> None:
    """This command makes artifacts with torch and onnx: without them, one line naming the extra."""
    from tdmi.extras import require

    for module in ("torch", "onnx"):
        require(module, what, "export")


def _show_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        err_console.print(f"[yellow]warning:[/] {w.message}", markup=True)


def _print_error_row(table: Table, label: str, err: Any) -> None:
    table.add_row(
        label,
        f"{err.max_abs:.3g}",
        f"{err.max_rel:.3g}",
        f"{100 * err.keypoint_agreement_exact:.1f}%",
        f"{100 * err.keypoint_agreement:.1f}%",
        f"{err.max_keypoint_dist:.1f}",
    )


def _error_table(title: str) -> Table:
    table = Table(title=title)
    for col in (
        "variant",
        "max abs",
        "max rel",
        "kpt agree (exact)",
        "kpt agree (tie-aware)",
        "max kpt dist px",
    ):
        table.add_column(col, justify="left" if col == "variant" else "right")
    return table


# ``onnx``'s own options (declared here so the command stays a short, readable signature)
OnnxOutputOpt = Annotated[
    Path, typer.Option("--output", "-o", help="The .onnx file to write (one self-contained file).")
]
OpsetOpt = Annotated[int, typer.Option("--opset", help="ONNX opset (>= 19 for DeformConv).")]
VerifyOpt = Annotated[bool, typer.Option("--verify/--no-verify", help="Compare ONNX Runtime with PyTorch.")]
SimplifyOpt = Annotated[bool, typer.Option("--simplify/--no-simplify", help="Run onnxslim.")]
OnnxPrecisionOpt = Annotated[Precision, typer.Option("--precision", help="fp32, fp16 (TensorRT) or int8.")]
OnnxTargetOpt = Annotated[
    Target | None,
    typer.Option(
        "--target",
        help="Runtime the FP16/INT8 graph is for: tensorrt (the default) or onnxruntime (fast CPU INT8).",
    ),
]
DeformConvOpt = Annotated[
    DeformConvForm,
    typer.Option("--deform-conv", help="DCN as ONNX DeformConv (native) or GridSample + Conv (decomposed)."),
]
SplitOpt = Annotated[
    bool,
    typer.Option(
        "--split",
        help="Write a per-frame backbone graph and a temporal head graph: <stem>.backbone/.head.onnx.",
    ),
]


@app.command("onnx")
def onnx_cmd(
    output: OnnxOutputOpt,
    config: ConfigOpt = None,
    checkpoint: ExportCheckpointOpt = None,
    batch: BatchOpt = "1",
    opset: OpsetOpt = 19,
    verify: VerifyOpt = True,
    simplify: SimplifyOpt = True,
    precision: OnnxPrecisionOpt = "fp32",
    target: OnnxTargetOpt = None,
    calib: CalibOpt = None,
    calib_method: CalibMethodOpt = "auto",
    calib_clips: CalibClipsOpt = 32,
    deform_conv: DeformConvOpt = "native",
    max_drop: MaxDropOpt = None,
    min_speedup: MinSpeedupOpt = None,
    op_types: OpTypesOpt = None,
    split: SplitOpt = False,
    verbose: Verbose = False,
) -> None:
    """Export (and verify) the FP32 graph; with --precision, convert it for the chosen runtime."""
    check_input_paths({"--checkpoint": checkpoint, "--calib": calib}, folders=True)
    require_export("tdmi-export onnx")
    from tdmi.export.export_spec import ExportSpec, parse_batch
    from tdmi.export.int8_recipes import parse_op_types
    from tdmi.export.pipeline import build

    if target in ("openvino", "any"):
        hint = " (OpenVINO IR: `tdmi-export openvino`)" if target == "openvino" else ""
        raise UsageError(f"--target must be tensorrt or onnxruntime, got {target!r}{hint}")
    spec = ExportSpec(
        config=config,
        checkpoint=checkpoint,
        precision=precision,
        target=target,
        deform_conv=deform_conv,
        batch=parse_batch(batch),
        opset=opset,
        verify=verify,
        simplify=simplify,
        split=split,
        calib=calib,
        calib_clips=calib_clips,
        calib_method=calib_method,
        op_types=parse_op_types(op_types),
        max_drop=max_drop,
        min_speedup=min_speedup,
    )
    if precision != "fp32" and target is None:
        err_console.print(DEFAULT_TARGET_NOTE[precision])
    config_file = config if config and config.endswith(".json") else None
    check_outputs(
        {"--output": output}, {"--checkpoint": checkpoint, "--config": config_file, "--calib": calib}
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = build(spec, output, log=_log)
    _show_warnings(caught)
    if split:
        _print_split(built.export)
    else:
        _print_export(output, built.export, built.variant, built.search)


def _print_export(output: Path, result: Any, final: Any, search: Any) -> None:
    """What ``onnx`` made: the FP32 export and its check, then the precision variant's."""
    console.print(
        f"wrote [bold]{output}[/] ({result.config.name}, batch {result.batch}, opset {result.opset})"
    )
    console.print(f"FP32 export: {result.seconds:.1f} s, weights: {result.weights}")
    if result.verification is not None:
        table = _error_table(f"ONNX Runtime CPU vs PyTorch ({result.verification.summary().split(':')[0]})")
        _print_error_row(table, "fp32", result.verification.error)
        console.print(table)
    else:
        console.print("[yellow]not verified against PyTorch (--no-verify)[/]")
    if final is None:
        return
    table = _error_table(f"{final.precision}-{final.target} vs FP32, ONNX Runtime CPU")
    _print_error_row(table, f"{final.precision}-{final.target}", final.error)
    console.print(table)
    label = "nodes kept FP32" if final.precision == "fp16" else "compute nodes left unquantized"
    names = ", ".join(final.kept_fp32_nodes[:12]) + (" ..." if len(final.kept_fp32_nodes) > 12 else "")
    console.print(f"{label}: {len(final.kept_fp32_nodes)}" + (f" ({names})" if names else ""))
    cal = final.calibration
    smoke = " [bold yellow](SMOKE TEST ONLY)[/]" if cal.get("smoke_only") else ""
    console.print(f"calibration: {cal.get('num_clips')} clips from {cal.get('source')}{smoke}")
    if final.precision == "int8":
        from tdmi.cli.int8 import print_recipe

        print_recipe(final, search)


def _print_split(result: Any) -> None:
    """``onnx --split``: the backbone/head pair for ``tdmi-infer --reuse-features``."""
    console.print(
        f"wrote [bold]{result.backbone}[/] and [bold]{result.head}[/] ({result.config.name}, dynamic batch, "
        f"opset {result.opset}) in {result.seconds:.1f} s, weights: {result.weights}"
    )
    if result.verification is not None:
        console.print(result.verification.summary())
    else:
        console.print("[yellow]not verified (--no-verify)[/]")


@app.command("inspect")
def inspect_cmd(
    path: Annotated[Path, typer.Argument(help="An ONNX file written by tdmi-export.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
    verbose: Verbose = False,
) -> None:
    """Print the metadata an exported file carries (config, joints, normalisation, variant, I/O)."""
    from tdmi.export import inspect

    info = inspect(path)
    if as_json:
        console.print_json(json.dumps(info))
        return
    table = Table(title=str(path), show_header=False)
    table.add_column("field")
    table.add_column("value")
    cfg = info["config"]
    rows = [
        (
            "variant",
            f"{info['variant']} (precision {info['precision']}, target {info['target']}, "
            f"fused {info['fused']})",
        ),
        (
            "model",
            f"{cfg['name']}: T={cfg['num_frames']}, input {cfg['input_size']}, W{cfg['backbone']['width']}",
        ),
        ("batch", str(info["batch"])),
        ("inputs", "; ".join(f"{i['name']} {i['dtype']} {i['shape']}" for i in info["inputs"])),
        ("outputs", "; ".join(f"{o['name']} {o['dtype']} {o['shape']}" for o in info["outputs"])),
        ("normalisation", json.dumps(info["normalization"], sort_keys=True)),
        ("joints", ", ".join(info["joints"])),
        ("toolkit", info["toolkit_version"]),
        ("opsets", json.dumps(info["opsets"])),
        ("nodes", f"{info['num_nodes']} ({', '.join(f'{k} {v}' for k, v in info['op_counts'].items())})"),
        ("extra", json.dumps(info["extra"], sort_keys=True)),
        ("config", json.dumps(cfg, sort_keys=True)),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


@app.command("fuse")
def fuse_cmd(
    src: Annotated[Path, typer.Argument(help="An unfused ONNX file written by tdmi-export (any precision).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The fused .onnx file to write.")],
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Run both graphs on ORT CPU and compare.")
    ] = True,
    force: Annotated[
        bool, typer.Option("--force", help="Allow -o to be SRC itself (rewrite in place).")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Replace the 4 temporal-difference blocks by tdmi::TemporalDiff nodes (for the TensorRT plugin)."""
    from tdmi.export.fuse import fuse_file

    check_outputs({"--output": output}, {"SRC": src}, force=force, force_option="--force")
    check_out = fuse_file(src, output, check=check)
    console.print(
        f"wrote [bold]{output}[/]: {check_out['fused']} TemporalDiff nodes ({check_out['variant']})"
    )
    if check_out.get("error") is not None:
        err = check_out["error"]
        console.print(
            f"fused vs unfused on ONNX Runtime CPU: max abs {err.max_abs:.3g}, max rel {err.max_rel:.3g}"
        )


@app.command("calib")
def calib_cmd(
    output: Annotated[Path, typer.Option("--output", "-o", help="The .npz file to write.")],
    config: Annotated[
        str, typer.Option("--config", "-c", help="Preset name or config JSON.", callback=preset_or_json)
    ] = "tdmi-w48-384x288",
    data: Annotated[
        Path | None,
        typer.Option("--data", help="PoseTrack-layout folder (omit: built-in clips, smoke tests only)."),
    ] = None,
    num_clips: Annotated[int, typer.Option("--num-clips", help="How many clips.")] = 32,
    boxes: PoseTrackBoxesOpt = "gt",
    split: PoseTrackSplitOpt = "val",
    verbose: Verbose = False,
) -> None:
    """Save a calibration set (.npz) to reuse with --calib."""
    from tdmi.export.calibration import build_calibration_set

    check_outputs(
        {"--output": output},
        {
            "--config": config if config.endswith(".json") else None,
            "--boxes": None if boxes == "gt" else boxes,
        },
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cs = build_calibration_set(
            config, data, num_clips, boxes if boxes == "gt" else Path(boxes), split=split
        )
    _show_warnings(caught)
    cs.save(output)
    smoke = " [bold yellow](SMOKE TEST ONLY)[/]" if cs.smoke_only else ""
    console.print(
        f"wrote [bold]{output}[/]: {cs.num_clips} clips {tuple(cs.clips.shape[1:])} from {cs.source}{smoke}"
    )


@app.command("triton")
def triton_cmd(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The model repository folder to write (new or empty).")
    ],
    onnx: Annotated[Path | None, typer.Option("--onnx", help="Exported ONNX (--batch dynamic).")] = None,
    engine: Annotated[
        Path | None, typer.Option("--engine", help="TensorRT engine (its .engine.json sidecar beside it).")
    ] = None,
    openvino: Annotated[
        Path | None,
        typer.Option(
            "--openvino",
            help="OpenVINO IR .xml (tdmi-export openvino --batch dynamic) for Triton's openvino backend.",
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config", "-c", help="Preset or config JSON: export ONNX first.", callback=preset_or_json
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="TDMI checkpoint: export ONNX first.")
    ] = None,
    max_batch: MaxBatchOpt = 16,
    preferred_batch: PreferredBatchOpt = "4,8,16",
    max_queue_delay_us: MaxQueueDelayOpt = 2000,
    instances: InstancesOpt = 1,
    kind: Annotated[
        Literal["gpu", "cpu"],
        typer.Option("--kind", help="Where the ONNX model runs: gpu or cpu (engines: always gpu)."),
    ] = "gpu",
    refine: PoseRefineOpt = "dark",
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty output folder.")] = False,
    verbose: Verbose = False,
) -> None:
    """Write a Triton model repository for the official container: tdmi, tdmi_pre, tdmi_post, tdmi_pose."""
    from tdmi.serve import resolve_artifact, write_repository

    settings = serve_settings(max_batch, preferred_batch, max_queue_delay_us, instances, refine, kind=kind)
    inputs = {"--onnx": onnx, "--engine": engine, "--openvino": openvino, "--checkpoint": checkpoint}
    for opt, path in inputs.items():
        if path is not None and output.resolve() in path.resolve().parents:
            raise UsageError(f"{opt} {path} lies inside --output {output}: choose another folder")
    with tempfile.TemporaryDirectory(prefix="tdmi-triton-") as tmp:
        art = resolve_artifact(
            tmp, onnx=onnx, engine=engine, openvino=openvino, config=config, checkpoint=checkpoint
        )
        write_repository(output, art, settings, flavour="platform", force=force)
    console.print(
        f"wrote [bold]{output}[/]: tdmi ({art.platform}, max_batch_size {settings.max_batch_size}), "
        "tdmi_pre, tdmi_post, tdmi_pose (ensemble)"
    )
    if art.platform == "openvino":
        console.print(
            "not run here: the tritonserver bundled with nvidia-pytriton has only the python backend; "
            "serve this repository with the official Triton container (its openvino backend)",
            markup=False,
            highlight=False,
        )


register_int8_commands(app)
register_openvino_commands(app)


def main() -> None:
    main_for(app, "tdmi-export")
