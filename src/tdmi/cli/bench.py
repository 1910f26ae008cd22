"""``tdmi-bench``: latency and accuracy of every backend this machine runs, against the PyTorch reference."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from tdmi.cli.common import console, main_for
from tdmi.errors import ConfigError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help=(
        "Benchmark TDMI: PyTorch reference vs exported ONNX (FP32 / FP16 / INT8) on ONNX Runtime and "
        "TensorRT engines, on the built-in sample clip; with --data, PoseTrack mAP per backend."
    ),
)


@app.command()
def bench(
    config: Annotated[
        str | None,
        typer.Option(
            "--config", "-c", help="Preset or config JSON (default: the checkpoint's, else tdmi-w48-384x288)."
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Trained weights; without it: random weights (said loudly)."),
    ] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option(
            "--backend",
            "-b",
            help="Rows to run, comma-separated or repeated: torch, torch-cuda, ort-fp32, ort-int8, "
            "ort-fp16-trtgraph, ort-int8-trtgraph, trt (default: the --variants set).",
        ),
    ] = None,
    variants: Annotated[
        str,
        typer.Option(
            "--variants",
            help="'default': torch (+CUDA), ORT FP32 and INT8, TensorRT engines; 'all' adds the "
            "TensorRT-targeted FP16 / INT8 graphs run on ONNX Runtime CPU as an accuracy check (not timed).",
        ),
    ] = "default",
    engine: Annotated[
        list[Path] | None,
        typer.Option("--engine", "-e", help="TensorRT engine (with its sidecar); repeatable."),
    ] = None,
    batch: Annotated[
        str, typer.Option("--batch", help="Batch sizes to time, comma-separated, e.g. 1,4.")
    ] = "1",
    iters: Annotated[int, typer.Option("--iters", help="Timed runs per backend and batch.")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs per backend and batch first.")] = 2,
    time_checks: Annotated[
        bool, typer.Option("--time-checks", help="Also time the accuracy-check rows.")
    ] = False,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="Artifact cache (default: $TDMI_CACHE_DIR or ~/.cache/tdmi)."),
    ] = None,
    calib_clips: Annotated[
        int,
        typer.Option(
            "--calib-clips",
            help="Calibration clips for the FP16 / INT8 variants (ORT holds ~2.3 GB per clip at W48).",
        ),
    ] = 4,
    calib_method: Annotated[
        str,
        typer.Option(
            "--calib-method",
            help="INT8 ranges: 'auto' (each target's measured default, as tdmi-export), 'max', "
            "'percentile' (ONNX Runtime only) or 'entropy'.",
        ),
    ] = "auto",
    calib_data: Annotated[
        Path | None,
        typer.Option(
            "--calib-data", help="PoseTrack folder to calibrate FP16 / INT8 on (default: built-in clips)."
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="ONNX Runtime intra-op threads (default: ORT's).")
    ] = None,
    cuda_graph: Annotated[
        bool,
        typer.Option("--cuda-graph", help="TensorRT rows launch a captured CUDA graph (less CPU overhead)."),
    ] = False,
    data: Annotated[
        Path | None, typer.Option("--data", help="PoseTrack root (annotations/<split>/*.json, images/...).")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="PoseTrack split.")] = "val",
    boxes: Annotated[str, typer.Option("--boxes", help="'gt' or a COCO-style detections JSON.")] = "gt",
    det_thr: Annotated[
        float, typer.Option("--det-thr", help="Minimum detection score with --boxes FILE.")
    ] = 0.3,
    missing_frames: Annotated[
        str,
        typer.Option(
            "--missing-frames", help="'nearest': use the nearest frame on disk for absent neighbours."
        ),
    ] = "error",
    max_samples: Annotated[
        int | None, typer.Option("--max-samples", help="Only the first N person boxes (quick runs).")
    ] = None,
    eval_batch: Annotated[
        int, typer.Option("--eval-batch", help="Clips per backend call in the PoseTrack harness.")
    ] = 8,
    pred_dir: Annotated[
        Path | None,
        typer.Option(
            "--pred-dir",
            help="Predictions, one folder per backend (default: beside --json, else a temp dir).",
        ),
    ] = None,
    accuracy: Annotated[
        str,
        typer.Option(
            "--accuracy",
            help="Task accuracy vs ground truth: 'synthetic' (held-out synthetic clips: PCK@0.05, OKS AP, "
            "drop vs the FP32 reference), 'none', or 'auto' (synthetic when --checkpoint is given).",
        ),
    ] = "auto",
    accuracy_clips: Annotated[
        int, typer.Option("--accuracy-clips", help="Held-out synthetic clips for --accuracy synthetic.")
    ] = 64,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON (and .md / .png beside it).")
    ] = None,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Markdown report path (default: beside --json).")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="PNG plot path (default: beside --json).")
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks for errors.")] = False,
) -> None:
    """Run the benchmark and print one table (plus a PoseTrack table with --data)."""
    from tdmi.benchmarks.report import render_console, write_report
    from tdmi.benchmarks.suite import BenchOptions, parse_backends, parse_batches, run_bench

    try:
        backends = parse_backends(backend) if backend else None
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="'--backend'") from None
    batches = parse_batches(batch)
    for path in (json_path, markdown, plot):
        if path is not None and not path.parent.is_dir():
            raise ConfigError(f"output folder {path.parent} does not exist: create it or choose another path")
    if json_path is not None:
        markdown = markdown or json_path.with_suffix(".md")
        plot = plot or json_path.with_suffix(".png")
    if data is not None and pred_dir is None:
        if json_path is not None:
            pred_dir = json_path.with_name(json_path.stem + "-predictions")
        else:
            pred_dir = Path(tempfile.mkdtemp(prefix="tdmi-bench-predictions-"))
    opts = BenchOptions(
        config=config,
        checkpoint=checkpoint,
        backends=backends,
        variants=variants,
        engines=list(engine or []),
        batches=batches,
        iters=iters,
        warmup=warmup,
        time_checks=time_checks,
        cache_dir=cache_dir,
        calib_clips=calib_clips,
        calib_data=calib_data,
        calib_method=calib_method,
        threads=threads,
        cuda_graph=cuda_graph,
        data=data,
        split=split,
        boxes=boxes,
        det_thr=det_thr,
        missing_frames=missing_frames,
        max_samples=max_samples,
        eval_batch=eval_batch,
        pred_dir=pred_dir,
        progress=not no_progress,
        accuracy=accuracy,
        accuracy_clips=accuracy_clips,
    )
    report = run_bench(opts, console=console)
    render_console(report, console)
    if data is not None:
        console.print(f"predictions: {pred_dir}", highlight=False, markup=False)
    for path in write_report(report, json_path, markdown, plot):
        console.print(f"wrote {path}", highlight=False, markup=False)


def main() -> None:
    main_for(app, "tdmi-bench")
