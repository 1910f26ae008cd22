"""``tdmi-infer``: pose-track a video or a frame folder; write JSON, CSV, overlay video and PNG."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from tdmi.cli.common import Verbose, check_input_paths, console, err_console, main_for, progress_bar
from tdmi.cli.options import BackendOpt, ConfigOpt, DeviceOpt, ModelOpt, RefineOpt, ThreadsOpt
from tdmi.errors import ConfigError, DataError, UsageError
from tdmi.spec.choices import BoxPolicy, DetectorFormat

app = typer.Typer(
    add_completion=False,
    help="Pose-track a video or frame folder with TDMI: PoseTrack18 JSON, CSV, overlay video, contact sheet.",
)


def load_predictors(
    model: str | None,
    config: str | None,
    reuse: bool,
    split: Path | None,
    device: str | None,
    threads: int | None = None,
    backend: str | None = None,
) -> tuple[Any, Any]:
    """The clip predictor and, for --reuse-features, its per-frame split form.

    ``threads`` caps the intra-op threads (ONNX Runtime, torch): one per Ray worker by default.
    """
    from tdmi import runtime
    from tdmi.runtime.features import OnnxFramePredictor, OpenVINOFramePredictor, frame_predictor_for
    from tdmi.spec.config import resolve_config

    if model is None and config is None:
        raise ConfigError("say which model runs: --model FILE (.pt/.onnx/.engine) or --config PRESET")
    if threads and (model is None or (backend or runtime.infer_backend(model)) == "torch"):
        import torch

        torch.set_num_threads(threads)
    if model is None:
        import torch

        from tdmi.model import TDMI
        from tdmi.runtime.torch_backend import TorchPredictor

        cfg = resolve_config(config)  # type: ignore[arg-type]  # config is set: the caller checked --model or --config
        warnings.warn(
            f"no --model given: {cfg.name} with random weights (tests the pipeline, not poses)", stacklevel=2
        )
        with torch.random.fork_rng():  # the same random weights on every run, so runs compare
            torch.manual_seed(0)
            net = TDMI(cfg)
        predictor: Any = TorchPredictor(net, device, source=cfg.name)
    elif model.endswith(".onnx") and split is None and reuse and not Path(model).is_file():
        # only the split pair exists
        if backend == "openvino":
            fp: Any = OpenVINOFramePredictor(model, threads=threads)
        else:
            fp = OnnxFramePredictor(model, device=device, threads=threads)
        return fp, fp
    else:
        chosen = backend or runtime.infer_backend(model)
        options = {"threads": threads} if threads and chosen in ("onnxruntime", "openvino") else {}
        predictor = runtime.load(model, backend=backend, device=device, **options)
    if config is not None and model is not None:
        want = resolve_config(config)
        if {**want.to_dict(), "name": ""} != {**predictor.config.to_dict(), "name": ""}:
            raise ConfigError(
                f"--config {config} does not match the model's embedded config {predictor.config.name}"
            )
    return predictor, (frame_predictor_for(predictor, split) if reuse else None)


def check_model_options(model: str | None, config: str | None) -> None:
    """Before any heavy import (--config is checked by its callback): the model file exists, and this
    install can run it (a preset alone or a .pt checkpoint is the PyTorch reference)."""
    if model is not None and not Path(model).exists():
        from tdmi.artifacts.split import split_paths

        if not (model.endswith(".onnx") and all(p.is_file() for p in split_paths(model))):
            raise DataError(f"--model {model} does not exist")
    torch_needed = model is None and config is not None
    torch_needed |= model is not None and model.lower().endswith((".pt", ".pth"))
    if torch_needed:
        from tdmi.extras import require

        what = "--config without --model (the PyTorch reference)" if model is None else "a .pt checkpoint"
        require("torch", what)


# --------------------------------------------------------------------------- tdmi-infer's own options
# SOURCE and -o are required, but checked after the model options (in `run`) so that a model this
# install cannot run is named first, whatever else is missing.
SourcesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="A video file, a folder of frames (sorted by name), a camera index (0) or a stream URL "
        "(rtsp://, http(s):// MJPEG); several videos, a folder of videos / frame folders, or a .txt "
        "list (one path a line) run as a batch into OUTPUT/<name>/. Required."
    ),
]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Output folder (created if missing). Required.")
]
FullFrameOpt = Annotated[bool, typer.Option("--full-frame", help="One person: the whole frame.")]
BoxesOpt = Annotated[
    str | None,
    typer.Option("--boxes", help="PoseTrack detections .json, MOT .csv (frame,id,x,y,w,h,score), or 'gt'."),
]
AnnotationsOpt = Annotated[
    Path | None, typer.Option("--annotations", help="PoseTrack annotation JSON for --boxes gt.")
]
TrackOpt = Annotated[
    bool, typer.Option("--track/--no-track", help="Link untracked boxes with the IoU tracker.")
]
ScoreThrOpt = Annotated[float, typer.Option("--score-thr", help="Drop detections below this score.")]
ReuseOpt = Annotated[
    bool, typer.Option("--reuse-features", help="Run the backbone once per frame and reuse its features.")
]
BoxPolicyOpt = Annotated[
    BoxPolicy, typer.Option("--box-policy", help="Crop of each clip frame: key, frame or smoothed.")
]
SplitOpt = Annotated[
    Path | None,
    typer.Option("--split", help="Split ONNX pair (tdmi-export onnx --split) for --reuse-features."),
]
FpsOpt = Annotated[float | None, typer.Option("--fps", help="Frame rate of a frame folder (default 25).")]
OverlayOpt = Annotated[bool, typer.Option("--overlay/--no-overlay", help="Write the overlay video.")]
AllowShortOpt = Annotated[
    bool,
    typer.Option(
        "--allow-short",
        help="A damaged video that decodes fewer frames than its container declares: warn and "
        "process what decodes (default: refuse, naming the first lost frame).",
    ),
]
DetectorOpt = Annotated[
    Path | None,
    typer.Option("--detector", help="Person detector ONNX (ultralytics YOLO or mmdeploy/rtmlib e2e)."),
]
DetectorFormatOpt = Annotated[
    DetectorFormat | None,
    typer.Option("--detector-format", help="yolo or e2e, when the graph does not say."),
]
DetScoreOpt = Annotated[float, typer.Option("--det-score", help="Keep persons at this score or above.")]
DetNmsOpt = Annotated[float, typer.Option("--det-nms", help="NMS IoU threshold (YOLO layout).")]
JsonlOpt = Annotated[
    str | None,
    typer.Option(
        "--jsonl", help="Live sources: each frame's poses as a JSON line, to a file or '-' (stdout)."
    ),
]
StallOpt = Annotated[
    float, typer.Option("--stall-timeout", help="Live sources: end when no frame comes for this many s.")
]
MaxFramesOpt = Annotated[
    int | None, typer.Option("--max-frames", help="Live sources: stop after this many frames.")
]
RayOpt = Annotated[
    str | None,
    typer.Option("--ray", help="Run the videos on Ray: 'auto' (RAY_ADDRESS or a local cluster) or ADDRESS."),
]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", help="Ray workers (actors), one predictor each (default 2).")
]
GpusOpt = Annotated[
    float, typer.Option("--gpus-per-worker", help="GPUs each Ray worker reserves (places it on GPU nodes).")
]


@app.command()
def run(
    sources: SourcesArg = None,
    output: OutputOpt = None,
    model: ModelOpt = None,
    backend: BackendOpt = None,
    config: ConfigOpt = None,
    full_frame: FullFrameOpt = False,
    boxes: BoxesOpt = None,
    annotations: AnnotationsOpt = None,
    track: TrackOpt = True,
    score_thr: ScoreThrOpt = 0.3,
    reuse_features: ReuseOpt = False,
    box_policy: BoxPolicyOpt = "key",
    split: SplitOpt = None,
    refine: RefineOpt = "quarter",
    device: DeviceOpt = None,
    fps: FpsOpt = None,
    overlay: OverlayOpt = True,
    allow_short: AllowShortOpt = False,
    detector: DetectorOpt = None,
    detector_format: DetectorFormatOpt = None,
    det_score: DetScoreOpt = 0.3,
    det_nms: DetNmsOpt = 0.45,
    jsonl: JsonlOpt = None,
    stall_timeout: StallOpt = 10.0,
    max_frames: MaxFramesOpt = None,
    ray: RayOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusOpt = 0.0,
    threads: ThreadsOpt = None,
    verbose: Verbose = False,
) -> None:
    """Track people through SOURCE and write OUTPUT/<name>.json, .csv, _overlay.mp4 and _sheet.png."""
    from tdmi.video.live import is_live

    check_model_options(model, config)
    sources, output = check_sources(sources, output, boxes, ray, jsonl, max_frames)
    stored = [s for s in sources if not is_live(s)]
    check_input_paths(
        {f"SOURCE {s}" if len(sources) > 1 else "SOURCE": s for s in stored}
        | {"--split": split, "--annotations": annotations, "--detector": detector}
        | ({"--boxes": boxes} if boxes not in (None, "gt") else {}),
        folders=True,
    )
    from tdmi.cli.infer_batch import is_batch, run_many
    from tdmi.video.batch import VideoOptions

    options = VideoOptions(
        full_frame=full_frame,
        boxes=boxes,
        annotations=str(annotations) if annotations is not None else None,
        tracker=track,
        score_thr=score_thr,
        box_policy=box_policy,
        refine=refine,
        overlay=overlay,
        fps=fps,
        allow_short=allow_short,
        detector=str(detector) if detector is not None else None,
        detector_format=detector_format,
        det_score=det_score,
        det_nms=det_nms,
    )
    if ray is None and (workers is not None or gpus_per_worker):
        raise UsageError("--workers and --gpus-per-worker need --ray")
    load = functools.partial(load_predictors, model, config, reuse_features, split, device, backend=backend)
    if is_batch(sources, ray):
        model_settings = {"model": model, "config": config, "reuse_features": reuse_features}
        model_settings["split"] = str(split) if split is not None else None
        run_many(sources, output, load, model_settings, options, ray, workers, gpus_per_worker, threads)
        return
    predictor, frame_predictor = _load_once(load, threads)
    if is_live(sources[0]):
        _run_live(sources[0], output, predictor, frame_predictor, options, jsonl, stall_timeout, max_frames)
    else:
        _run_stored(sources[0], output, predictor, frame_predictor, options)


def _load_once(load: Any, threads: int | None) -> tuple[Any, Any]:
    """The predictors of a one-video run; each warning of the loading (e.g. random weights) is
    printed as it was said, even when an earlier run in this process said it already."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictors: tuple[Any, Any] = load(threads)
    for w in caught:
        err_console.print(f"[yellow]warning:[/] {w.message}", markup=True)
    return predictors


def check_sources(
    sources: list[str] | None,
    output: Path | None,
    boxes: str | None,
    ray: str | None,
    jsonl: str | None,
    max_frames: int | None,
) -> tuple[list[str], Path]:
    """The usage rules between the inputs and the options that only some inputs take."""
    from tdmi.video.live import is_live

    if not sources:
        raise UsageError("missing SOURCE: a video file, a folder of frames, a camera index or a stream URL")
    if output is None:
        raise UsageError("missing --output/-o: the folder to write the results to")
    if any(is_live(s) for s in sources) and (len(sources) > 1 or ray is not None):
        raise UsageError("a live source (camera index or stream URL) runs alone, without --ray")
    if not is_live(sources[0]) and (jsonl is not None or max_frames is not None):
        raise UsageError("--jsonl and --max-frames are for live sources (a camera index or a stream URL)")
    if is_live(sources[0]) and boxes is not None:
        raise UsageError(
            "--boxes files are for stored videos: a live source takes --full-frame or --detector"
        )
    return sources, output


def _run_stored(source: str, output: Path, predictor: Any, frame_predictor: Any, options: Any) -> None:
    """One stored video or frame folder, with a progress bar and the run's report."""
    from tdmi.video.batch import infer_with_options, load_detector

    detector = load_detector(options, cached=False)
    with progress_bar("{task.fields[fps]:.1f} frames/s") as bar:
        task = bar.add_task("pose tracking", total=None, fps=0.0)

        def progress(done: int, total: int | None) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            bar.update(task, completed=done, total=total, fps=done / elapsed if elapsed > 0 else 0.0)

        out = infer_with_options(
            source,
            output,
            options,
            predictor,
            frame_predictor,
            annotations=options.annotations,
            detector=detector,
            progress=progress,
        )
    s = out.result.summary()
    # OpenVINO says which precision it compiled to (bf16 on BF16 CPUs unless told otherwise)
    precision = getattr(predictor, "precision", None) or getattr(predictor, "inference_precision", "")
    reuse = f", cache hit rate {100 * s['cache_hit_rate']:.1f}%" if s["reuse_features"] else " (clip by clip)"
    console.print(
        f"{s['frames']} frames, {s['persons']} person(s), {s['clips']} clips in {s['wall_s']:.2f} s "
        f"({s['frames_per_s']:.2f} frames/s, {s['backend']} {precision}); "
        f"backbone passes {s['backbone_passes']} "
        f"(clip by clip: {s['backbone_passes_clip_by_clip']}){reuse}; box policy {s['box_policy']}"
    )
    report_outputs(out, console)
    if out.overlay_codec is not None:
        c = out.overlay_codec
        note = (
            "plays in browsers"
            if c.browser_playable
            else "this OpenCV cannot encode H.264; browsers may not play it"
        )
        console.print(f"overlay codec: {c.label} ({c.fourcc}; {note})")


def report_outputs(out: Any, say: Any) -> None:
    """The lines every run ends with: the detector's share of the time (when one ran) and the files."""
    s = out.result.summary()
    if "detector" in s:
        d = s["detector"]
        say.print(
            f"detector ({d['format']}, {d['backend']}): {d['ms_per_frame']:.1f} ms/frame beside the pose "
            f"pass's {d['pose_ms_per_frame']:.1f} ms/frame ({100 * d['share']:.1f}% of the time per frame)"
        )
    say.print("wrote " + ", ".join(str(p) for p in out.written()))


def _run_live(
    source: str,
    output: Path,
    predictor: Any,
    frame_predictor: Any,
    options: Any,
    jsonl: str | None,
    stall_timeout: float,
    max_frames: int | None,
) -> None:
    """Online mode: poses as each frame's clip completes; a stall or a drop ends the run cleanly."""
    from tdmi.video.batch import load_detector
    from tdmi.video.live import infer_live

    # with --jsonl - stdout carries the poses only: every report goes to stderr
    say = err_console if jsonl == "-" else console
    out = infer_live(
        source,
        output,
        predictor,
        frame_predictor=frame_predictor,
        full_frame=options.full_frame,
        detector=load_detector(options, cached=False),
        box_policy=options.box_policy,
        refine=options.refine,
        overlay=options.overlay,
        jsonl=jsonl,
        fps=options.fps,
        stall_timeout=stall_timeout,
        max_frames=max_frames,
    )
    s = out.result.summary()
    live = s["live"]
    if out.end_reason == "stalled":
        err_console.print(
            f"[yellow]warning:[/] no frame for {stall_timeout:g} s: the stream stalled; ended cleanly"
        )
    elif out.end_reason.startswith("ended ("):
        err_console.print(f"[yellow]warning:[/] the stream dropped: {out.end_reason[7:-1]}; ended cleanly")
    say.print(
        f"{s['frames']} frames from {live['source']} ({out.end_reason}), {s['persons']} person(s), "
        f"{live['frames_per_s']:.2f} frames/s; latency frame arrival -> poses "
        f"p50 {live['latency_ms_p50']} ms, p99 {live['latency_ms_p99']} ms "
        f"({live['delay_frames']} frame(s) of delay; after the clip's last frame "
        f"p50 {live['after_window_ms_p50']} ms)"
    )
    report_outputs(out, say)


def main() -> None:
    main_for(app, "tdmi-infer")


if __name__ == "__main__":
    main()
