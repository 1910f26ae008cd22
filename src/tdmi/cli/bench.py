"""``tdmi-bench``: latency and accuracy of every backend this machine runs, against the PyTorch reference.

``tdmi-bench`` with no sub-command is the benchmark itself (the app's callback); ``tdmi-bench gpu``
is the GPU evidence kit (:mod:`tdmi.gpukit`), the same typer command as ``python -m tdmi.gpukit``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from tdmi.benchmarks.options import Accuracy, BenchCalibMethod
from tdmi.cli.common import Verbose, check_input_paths, console, main_for
from tdmi.cli.options import (
    CalibClipsOpt,
    CheckpointOpt,
    ConfigOpt,
    MissingFramesOpt,
    NoProgressOpt,
    PoseTrackBoxesOpt,
    PoseTrackSplitOpt,
    ThreadsOpt,
)
from tdmi.errors import ConfigError
from tdmi.gpukit.cli import SUMMARY as GPU_SUMMARY
from tdmi.gpukit.cli import gpu
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
app.command("gpu", help=GPU_SUMMARY)(gpu)

Protocol = Literal["http", "grpc"]  # tritonclient's two transports (tdmi.serve.load_test)

# ---- the benchmark's own options (shared ones come from tdmi.cli.options)
VariantBackendOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--backend",
        "-b",
        help="Rows to run, comma-separated or repeated: torch, torch-cuda, ort-fp32, ort-int8, "
        "ort-fp16-trtgraph, ort-int8-trtgraph, ov-fp32, ov-bf16, ov-int8, trt (default: the --variants set).",
    ),
]
VariantsOpt = Annotated[
    str,
    typer.Option(
        "--variants",
        help="'default': torch (+CUDA), ORT FP32 and INT8, OpenVINO FP32/BF16/INT8 where installed, "
        "TensorRT engines; 'all' adds the TensorRT-targeted FP16 / INT8 graphs run on ONNX Runtime CPU "
        "as an accuracy check (not timed).",
    ),
]
EngineOpt = Annotated[
    list[Path] | None, typer.Option("--engine", "-e", help="TensorRT engine (with its sidecar); repeatable.")
]
BatchOpt = Annotated[str, typer.Option("--batch", help="Batch sizes to time, comma-separated, e.g. 1,4.")]
ItersOpt = Annotated[int, typer.Option("--iters", help="Timed runs per backend and batch.")]
WarmupOpt = Annotated[int, typer.Option("--warmup", help="Untimed runs per backend and batch first.")]
TimeChecksOpt = Annotated[bool, typer.Option("--time-checks", help="Also time the accuracy-check rows.")]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Artifact cache (default: $TDMI_CACHE_DIR or ~/.cache/tdmi)."),
]
CalibMethodOpt = Annotated[
    BenchCalibMethod,
    typer.Option(
        "--calib-method",
        help="INT8 ranges: 'auto' (each target's measured default, as tdmi-export), 'max', "
        "'percentile' (ONNX Runtime only) or 'entropy'.",
    ),
]
Int8OpTypesOpt = Annotated[
    str | None,
    typer.Option(
        "--int8-op-types",
        help="INT8 variants: ONNX op types to quantize, comma-separated (e.g. Conv,Gemm,MatMul); "
        "'all' is ServerModelOpt's own set. Default: each target's (ORT: Conv,Gemm,MatMul; TensorRT: all).",
    ),
]
CalibDataOpt = Annotated[
    Path | None,
    typer.Option(
        "--calib-data", help="PoseTrack folder to calibrate FP16 / INT8 on (default: built-in clips)."
    ),
]
CudaGraphOpt = Annotated[
    bool, typer.Option("--cuda-graph", help="TensorRT rows launch a captured CUDA graph (less CPU overhead).")
]
DataOpt = Annotated[
    Path | None, typer.Option("--data", help="PoseTrack root (annotations/<split>/*.json, images/...).")
]
DetThrOpt = Annotated[float, typer.Option("--det-thr", help="Minimum detection score with --boxes FILE.")]
MaxSamplesOpt = Annotated[
    int | None, typer.Option("--max-samples", help="Only the first N person boxes (quick runs).")
]
EvalBatchOpt = Annotated[
    int, typer.Option("--eval-batch", help="Clips per backend call in the PoseTrack harness.")
]
PredDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--pred-dir", help="Predictions, one folder per backend (default: beside --json, else a temp dir)."
    ),
]
AccuracyOpt = Annotated[
    Accuracy,
    typer.Option(
        "--accuracy",
        help="Task accuracy vs ground truth: 'synthetic' (held-out synthetic clips: PCK@0.05, OKS AP, "
        "drop vs the FP32 reference), 'none', or 'auto' (synthetic when --checkpoint is given).",
    ),
]
AccuracyClipsOpt = Annotated[
    int, typer.Option("--accuracy-clips", help="Held-out synthetic clips for --accuracy synthetic.")
]
ReportJsonOpt = Annotated[
    Path | None, typer.Option("--json", help="Write the results as JSON (and .md / .png beside it).")
]
MarkdownOpt = Annotated[
    Path | None, typer.Option("--markdown", help="Markdown report path (default: beside --json).")
]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="PNG plot path (default: beside --json).")]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="Load-test a Triton server at HOST:PORT (tdmi-serve) instead: concurrency sweep, "
        "batching on/off, parity with --model or --config/--checkpoint.",
    ),
]
ProtocolOpt = Annotated[Protocol, typer.Option("--protocol", help="--server: http or grpc.")]
ConcurrencyOpt = Annotated[
    str, typer.Option("--concurrency", help="--server: concurrent clients per level, comma-separated.")
]
RequestsOpt = Annotated[int, typer.Option("--requests", help="--server: at most N requests per level.")]
SecondsOpt = Annotated[
    float, typer.Option("--seconds", help="--server: at most this many seconds per level.")
]
CompareRoundsOpt = Annotated[
    int, typer.Option("--compare-rounds", help="--server: paired batching on/off rounds (0: skip).")
]
ServerModelOpt = Annotated[
    Path | None, typer.Option("--model", help="--server: the local ONNX/engine the server runs, for parity.")
]


@app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    config: ConfigOpt = None,
    checkpoint: CheckpointOpt = None,
    backend: VariantBackendOpt = None,
    variants: VariantsOpt = "default",
    engine: EngineOpt = None,
    batch: BatchOpt = "1",
    iters: ItersOpt = 10,
    warmup: WarmupOpt = 2,
    time_checks: TimeChecksOpt = False,
    cache_dir: CacheDirOpt = None,
    calib_clips: CalibClipsOpt = 4,
    calib_method: CalibMethodOpt = "auto",
    int8_op_types: Int8OpTypesOpt = None,
    calib_data: CalibDataOpt = None,
    threads: ThreadsOpt = None,
    cuda_graph: CudaGraphOpt = False,
    data: DataOpt = None,
    split: PoseTrackSplitOpt = "val",
    boxes: PoseTrackBoxesOpt = "gt",
    det_thr: DetThrOpt = 0.3,
    missing_frames: MissingFramesOpt = "error",
    max_samples: MaxSamplesOpt = None,
    eval_batch: EvalBatchOpt = 8,
    pred_dir: PredDirOpt = None,
    accuracy: AccuracyOpt = "auto",
    accuracy_clips: AccuracyClipsOpt = 64,
    json_path: ReportJsonOpt = None,
    markdown: MarkdownOpt = None,
    plot: PlotOpt = None,
    no_progress: NoProgressOpt = False,
    server: ServerOpt = None,
    protocol: ProtocolOpt = "http",
    concurrency: ConcurrencyOpt = "1,2,4,8,16",
    requests: RequestsOpt = 64,
    seconds: SecondsOpt = 10.0,
    compare_rounds: CompareRoundsOpt = 3,
    model: ServerModelOpt = None,
    verbose: Verbose = False,
) -> None:
    """Run the benchmark and print one table (plus a PoseTrack table with --data)."""
    if ctx.invoked_subcommand is not None:  # ``tdmi-bench gpu ...``: the kit runs instead
        return
    # Option values first, before any heavy import: a typo answers at once.
    check_input_paths({"--checkpoint": checkpoint, "--model": model})
    check_input_paths({"--data": data, "--calib-data": calib_data}, folders=True)
    if server is not None:
        load = {
            "protocol": protocol,
            "requests": requests,
            "seconds": seconds,
            "compare_rounds": compare_rounds,
        }
        _load_test(server, concurrency, batch, model, config, checkpoint, json_path, not no_progress, **load)
        return
    from tdmi.extras import require

    for module in ("torch", "onnx"):
        require(module, "tdmi-bench", "bench")
    markdown, plot = _check_report_paths(json_path, markdown, plot, config, checkpoint, boxes, engine)
    pred_dir, keep_predictions = _prediction_folder(data, pred_dir, json_path)
    from tdmi.benchmarks.options import bench_options
    from tdmi.benchmarks.variants import parse_backends

    try:
        backends = parse_backends(backend) if backend else None
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="'--backend'") from None
    opts = bench_options(
        backends=backends, batch=batch, engine=engine, int8_op_types=int8_op_types, no_progress=no_progress,
        config=config, checkpoint=checkpoint, variants=variants, iters=iters, warmup=warmup,
        time_checks=time_checks, cache_dir=cache_dir, calib_clips=calib_clips, calib_data=calib_data,
        calib_method=calib_method, threads=threads, cuda_graph=cuda_graph, data=data, split=split,
        boxes=boxes, det_thr=det_thr, missing_frames=missing_frames, max_samples=max_samples,
        eval_batch=eval_batch, pred_dir=pred_dir, accuracy=accuracy, accuracy_clips=accuracy_clips,
    )  # fmt: skip
    _run_and_report(opts, data is not None, keep_predictions, (json_path, markdown, plot))


def _check_report_paths(
    json_path: Path | None,
    markdown: Path | None,
    plot: Path | None,
    config: str | None,
    checkpoint: Path | None,
    boxes: str,
    engine: list[Path] | None,
) -> tuple[Path | None, Path | None]:
    """(markdown, plot) paths (beside ``--json`` unless given), every one writable and none an input.

    Checked before minutes of exporting and timing.
    """
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
    check_outputs({"--json": json_path, md_opt: markdown, plot_opt: plot}, inputs)
    return markdown, plot


def _prediction_folder(
    data: Path | None, pred_dir: Path | None, json_path: Path | None
) -> tuple[Path | None, bool]:
    """Where the PoseTrack harness writes its predictions, and whether they are kept after the run."""
    if data is None or pred_dir is not None:
        return pred_dir, True
    if json_path is not None:
        return json_path.with_name(json_path.stem + "-predictions"), True
    # inside this run's temp root, removed when the run ends
    return Path(tempfile.mkdtemp(prefix="tdmi-bench-predictions-")), False


def _run_and_report(
    opts: Any, posetrack: bool, keep_predictions: bool, paths: tuple[Path | None, ...]
) -> None:
    from tdmi.benchmarks.job import run_bench
    from tdmi.benchmarks.report_console import render_console
    from tdmi.benchmarks.report_markdown import write_report

    report = run_bench(opts, console=console)
    render_console(report, console)
    if posetrack and keep_predictions:
        console.print(f"predictions: {opts.pred_dir}", highlight=False, markup=False)
    elif posetrack:
        console.print("predictions not kept (pass --pred-dir or --json to keep them)", highlight=False)
    for path in write_report(report, *paths):
        console.print(f"wrote {path}", highlight=False, markup=False)


def _load_test(
    server: str,
    concurrency: str,
    batch: str,
    model: Path | None,
    config: str | None,
    checkpoint: Path | None,
    json_path: Path | None,
    progress: bool,
    **settings: Any,
) -> None:
    """``tdmi-bench --server``: the Triton load test (:mod:`tdmi.serve.load_test`)."""
    import json

    from tdmi.cli.options import parse_sizes
    from tdmi.errors import TdmiError, UsageError
    from tdmi.serve.load_test import LoadTestOptions, render, run_load_test
    from tdmi.utils import source_commit, write_text_atomic

    levels = parse_sizes(concurrency, "--concurrency")
    batches = parse_sizes(batch, "--batch")
    if len(batches) != 1:
        raise UsageError("--server takes one --batch (clips per request)")
    check_outputs({"--json": json_path}, {"--model": model, "--checkpoint": checkpoint})
    reference = _load_test_reference(model, config, checkpoint)
    opts = LoadTestOptions(
        url=server, concurrency=levels, batch=batches[0], compare_concurrency=max(levels), **settings
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


def _load_test_reference(model: Path | None, config: str | None, checkpoint: Path | None) -> Any:
    """The local predictor the served heatmaps are compared with (None: no parity check)."""
    if model is None and config is None and checkpoint is None:
        return None
    from tdmi import runtime
    from tdmi.errors import UsageError
    from tdmi.serve import resolve_artifact

    if model is not None and (config is not None or checkpoint is not None):
        raise UsageError("give the local model as --model FILE or as --config/--checkpoint, not both")
    src = str(model) if model is not None else None
    if src is None:  # the same export tdmi-serve makes from --config/--checkpoint
        src = str(
            resolve_artifact(tempfile.mkdtemp(prefix="tdmi-load-"), config=config, checkpoint=checkpoint).path
        )
    return runtime.load(src)


def main() -> None:
    main_for(app, "tdmi-bench")
