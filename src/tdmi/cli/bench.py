"""``tdmi-bench``: latency and accuracy of every backend this machine runs, against the PyTorch reference.

``tdmi-bench gpu`` is the GPU evidence kit (:mod:`tdmi.benchmarks.gpu_check`), kept a separate
entry so ``tdmi-bench`` with no subcommand stays the benchmark itself.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from tdmi.cli.common import Verbose, check_input_paths, console, main_for, preset_or_json
from tdmi.errors import ConfigError
from tdmi.utils import check_outputs

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help=(
        "Benchmark TDMI: PyTorch reference vs exported ONNX (FP32 / FP16 / INT8) on ONNX Runtime and "
        "TensorRT engines, on the built-in sample clip; with --data, PoseTrack mAP per backend. "
        "'tdmi-bench gpu --help': the GPU evidence kit."
    ),
)


@app.command()
def bench(
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="Preset or config JSON (default: the checkpoint's, else tdmi-w48-384x288).",
            callback=preset_or_json,
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
            "ort-fp16-trtgraph, ort-int8-trtgraph, ov-fp32, ov-bf16, ov-int8, trt "
            "(default: the --variants set).",
        ),
    ] = None,
    variants: Annotated[
        str,
        typer.Option(
            "--variants",
            help="'default': torch (+CUDA), ORT FP32 and INT8, OpenVINO FP32/BF16/INT8 where installed, "
            "TensorRT engines; 'all' adds the TensorRT-targeted FP16 / INT8 graphs run on ONNX Runtime CPU "
            "as an accuracy check (not timed).",
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
            help="Calibration clips for the FP16 / INT8 variants (probed one clip at a time).",
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
    int8_op_types: Annotated[
        str | None,
        typer.Option(
            "--int8-op-types",
            help="INT8 variants: ONNX op types to quantize, comma-separated (e.g. Conv,Gemm,MatMul); "
            "'all' is ModelOpt's own set. Default: each target's (ORT: Conv,Gemm,MatMul; TensorRT: all).",
        ),
    ] = None,
    calib_data: Annotated[
        Path | None,
        typer.Option(
            "--calib-data", help="PoseTrack folder to calibrate FP16 / INT8 on (default: built-in clips)."
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="Intra-op threads of every CPU backend, torch and ORT alike (default: usable cores).",
        ),
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
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="Load-test a Triton server at HOST:PORT (tdmi-serve) instead: concurrency sweep, "
            "batching on/off, parity with --model or --config/--checkpoint.",
        ),
    ] = None,
    protocol: Annotated[str, typer.Option("--protocol", help="--server: http or grpc.")] = "http",
    concurrency: Annotated[
        str, typer.Option("--concurrency", help="--server: concurrent clients per level, comma-separated.")
    ] = "1,2,4,8,16",
    requests: Annotated[int, typer.Option("--requests", help="--server: at most N requests per level.")] = 64,
    seconds: Annotated[
        float, typer.Option("--seconds", help="--server: at most this many seconds per level.")
    ] = 10.0,
    compare_rounds: Annotated[
        int, typer.Option("--compare-rounds", help="--server: paired batching on/off rounds (0: skip).")
    ] = 3,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="--server: the local ONNX/engine the server runs, for parity."),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Run the benchmark and print one table (plus a PoseTrack table with --data)."""
    # Option values first, before any heavy import: a typo answers at once.
    check_input_paths({"--checkpoint": checkpoint, "--model": model})
    check_input_paths({"--data": data, "--calib-data": calib_data}, folders=True)
    if server is None:
        from tdmi.extras import require

        for module in ("torch", "onnx"):
            require(module, "tdmi-bench", "bench")
    if server is not None:
        _load_test(
            server,
            protocol,
            concurrency,
            requests,
            seconds,
            compare_rounds,
            batch,
            model,
            config,
            checkpoint,
            json_path,
            not no_progress,
        )
        return
    from tdmi.benchmarks.report import render_console, write_report
    from tdmi.benchmarks.suite import BenchOptions, parse_backends, parse_batches, run_bench
    from tdmi.export.int8_recipes import parse_op_types

    try:
        backends = parse_backends(backend) if backend else None
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="'--backend'") from None
    batches = parse_batches(batch)
    if json_path is not None:
        md_opt = "--markdown" if markdown else "--json (its .md)"
        plot_opt = "--plot" if plot else "--json (its .png)"
        markdown = markdown or json_path.with_suffix(".md")
        plot = plot or json_path.with_suffix(".png")
    else:
        md_opt, plot_opt = "--markdown", "--plot"
    inputs: dict[str, Path | None] = {
        "--checkpoint": checkpoint,
        "--boxes": None if boxes == "gt" else Path(boxes),
    }
    if config and config.endswith(".json"):
        inputs["--config"] = Path(config)
    inputs.update({f"--engine {e}": e for e in engine or []})
    # Before minutes of exporting and timing: every report path is writable and none is an input.
    check_outputs({"--json": json_path, md_opt: markdown, plot_opt: plot}, inputs)
    keep_predictions = True
    if data is not None and pred_dir is None:
        if json_path is not None:
            pred_dir = json_path.with_name(json_path.stem + "-predictions")
        else:  # inside this run's temp root, removed when the run ends
            pred_dir = Path(tempfile.mkdtemp(prefix="tdmi-bench-predictions-"))
            keep_predictions = False
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
        int8_op_types=parse_op_types(int8_op_types),
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
    if data is not None and keep_predictions:
        console.print(f"predictions: {pred_dir}", highlight=False, markup=False)
    elif data is not None:
        console.print("predictions not kept (pass --pred-dir or --json to keep them)", highlight=False)
    for path in write_report(report, json_path, markdown, plot):
        console.print(f"wrote {path}", highlight=False, markup=False)


def _load_test(
    server: str,
    protocol: str,
    concurrency: str,
    requests: int,
    seconds: float,
    compare_rounds: int,
    batch: str,
    model: Path | None,
    config: str | None,
    checkpoint: Path | None,
    json_path: Path | None,
    progress: bool,
) -> None:
    """``tdmi-bench --server``: the Triton load test (:mod:`tdmi.benchmarks.load_test`)."""
    import json

    from tdmi.benchmarks.load_test import LoadTestOptions, render, run_load_test
    from tdmi.cli.options import parse_sizes
    from tdmi.errors import TdmiError, UsageError
    from tdmi.utils import source_commit, write_text_atomic

    if protocol not in ("http", "grpc"):
        raise UsageError(f"--protocol must be http or grpc, got {protocol!r}")
    levels = parse_sizes(concurrency, "--concurrency")
    batches = parse_sizes(batch, "--batch")
    if len(batches) != 1:
        raise UsageError("--server takes one --batch (clips per request)")
    check_outputs({"--json": json_path}, {"--model": model, "--checkpoint": checkpoint})
    reference = None
    if model is not None or config is not None or checkpoint is not None:
        from tdmi import runtime
        from tdmi.serve import resolve_artifact

        if model is not None and (config is not None or checkpoint is not None):
            raise UsageError("give the local model as --model FILE or as --config/--checkpoint, not both")
        src = str(model) if model is not None else None
        if src is None:  # the same export tdmi-serve makes from --config/--checkpoint
            src = str(
                resolve_artifact(
                    tempfile.mkdtemp(prefix="tdmi-load-"), config=config, checkpoint=checkpoint
                ).path
            )
        reference = runtime.load(src)
    opts = LoadTestOptions(
        url=server,
        protocol=protocol,
        concurrency=levels,
        requests=requests,
        seconds=seconds,
        batch=batches[0],
        compare_concurrency=max(levels),
        compare_rounds=compare_rounds,
    )
    report = run_load_test(opts, reference, progress=progress)
    render(report, console)
    if json_path is not None:
        data = {**report.to_dict(), "commit": source_commit()}
        write_text_atomic(json_path, json.dumps(data, indent=2) + "\n")
        console.print(f"wrote {json_path}", highlight=False, markup=False)
    if report.totals["lost"] or report.totals["failed"]:
        raise TdmiError(f"{report.totals['failed']} requests failed and {report.totals['lost']} were lost")
    if report.parity.get("checked") and not report.parity["ok"]:
        raise TdmiError(
            f"served heatmaps differ from the local runtime by {report.parity['max_abs']:.3g} "
            f"(tolerance {report.parity['tol']:g})"
        )


def main() -> None:
    if sys.argv[1:2] == ["gpu"]:
        from tdmi.benchmarks.gpu_check import main as gpu_main

        sys.exit(gpu_main(sys.argv[2:], prog="tdmi-bench gpu"))
    main_for(app, "tdmi-bench")
