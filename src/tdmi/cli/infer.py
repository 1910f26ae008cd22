"""``tdmi-infer``: pose-track a video or a frame folder; write JSON, CSV, overlay video and PNG."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from tdmi.cli.common import Verbose, console, err_console, main_for
from tdmi.errors import ConfigError

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
    backend: str | None = None,
) -> tuple[Any, Any]:
    """The clip predictor and, for --reuse-features, its per-frame split form."""
    import torch

    from tdmi import runtime
    from tdmi.model import TDMI, resolve_config
    from tdmi.runtime.features import OnnxFramePredictor, OpenVINOFramePredictor, frame_predictor_for
    from tdmi.runtime.torch_backend import TorchPredictor

    if model is None and config is None:
        raise ConfigError("say which model runs: --model FILE (.pt/.onnx/.engine) or --config PRESET")
    if model is None:
        cfg = resolve_config(config)  # type: ignore[arg-type]
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
            fp: Any = OpenVINOFramePredictor(model)
        else:
            fp = OnnxFramePredictor(model, device=device)
        return fp, fp
    else:
        predictor = runtime.load(model, backend=backend, device=device)
    if config is not None and model is not None:
        want = resolve_config(config)
        if {**want.to_dict(), "name": ""} != {**predictor.config.to_dict(), "name": ""}:
            raise ConfigError(
                f"--config {config} does not match the model's embedded config {predictor.config.name}"
            )
    return predictor, (frame_predictor_for(predictor, split) if reuse else None)


@app.command()
def run(
    source: Annotated[Path, typer.Argument(help="A video file or a folder of frames (sorted by name).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (created if missing).")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Checkpoint .pt, ONNX .onnx, OpenVINO IR .xml or TensorRT .engine."
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="Engine for the model file (default: from its suffix); openvino runs a decomposed .onnx.",
        ),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="Preset or config JSON (alone: random weights).")
    ] = None,
    full_frame: Annotated[bool, typer.Option("--full-frame", help="One person: the whole frame.")] = False,
    boxes: Annotated[
        str | None,
        typer.Option(
            "--boxes", help="PoseTrack detections .json, MOT .csv (frame,id,x,y,w,h,score), or 'gt'."
        ),
    ] = None,
    annotations: Annotated[
        Path | None, typer.Option("--annotations", help="PoseTrack annotation JSON for --boxes gt.")
    ] = None,
    track: Annotated[
        bool, typer.Option("--track/--no-track", help="Link untracked boxes with the IoU tracker.")
    ] = True,
    score_thr: Annotated[float, typer.Option("--score-thr", help="Drop detections below this score.")] = 0.3,
    reuse_features: Annotated[
        bool, typer.Option("--reuse-features", help="Run the backbone once per frame and reuse its features.")
    ] = False,
    box_policy: Annotated[
        str, typer.Option("--box-policy", help="Crop of each clip frame: key, frame or smoothed.")
    ] = "key",
    split: Annotated[
        Path | None,
        typer.Option("--split", help="Split ONNX pair (tdmi-export onnx --split) for --reuse-features."),
    ] = None,
    refine: Annotated[
        str, typer.Option("--refine", help="Heatmap decoding: quarter, dark or none.")
    ] = "quarter",
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda or auto.")] = None,
    fps: Annotated[
        float | None, typer.Option("--fps", help="Frame rate of a frame folder (default 25).")
    ] = None,
    overlay: Annotated[bool, typer.Option("--overlay/--no-overlay", help="Write the overlay video.")] = True,
    verbose: Verbose = False,
) -> None:
    """Track people through SOURCE and write OUTPUT/<name>.json, .csv, _overlay.mp4 and _sheet.png."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tdmi.video.infer import infer_video
    from tdmi.video.pipeline import BOX_POLICIES

    if box_policy not in BOX_POLICIES:
        raise ConfigError(f"--box-policy must be one of {', '.join(BOX_POLICIES)}, got {box_policy!r}")
    if refine not in ("quarter", "dark", "none"):
        raise ConfigError(f"--refine must be quarter, dark or none, got {refine!r}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor, frame_predictor = load_predictors(model, config, reuse_features, split, device, backend)
    for w in caught:
        err_console.print(f"[yellow]warning:[/] {w.message}", markup=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]:.1f} frames/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("pose tracking", total=None, fps=0.0)

        def progress(done: int, total: int | None) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            bar.update(task, completed=done, total=total, fps=done / elapsed if elapsed > 0 else 0.0)

        out = infer_video(
            source,
            output,
            predictor,
            frame_predictor=frame_predictor,
            full_frame=full_frame,
            boxes=boxes,
            annotations=annotations,
            tracker=track,
            score_thr=score_thr,
            box_policy=box_policy,
            refine=refine,
            overlay=overlay,
            fps=fps,
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
    written = [out.json, out.csv] + [p for p in (out.overlay, out.sheet) if p is not None]
    console.print("wrote " + ", ".join(str(p) for p in written))


def main() -> None:
    main_for(app, "tdmi-infer")


if __name__ == "__main__":
    main()
