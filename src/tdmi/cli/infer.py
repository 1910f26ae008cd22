"""``tdmi-infer``: pose-track a video or a frame folder; write JSON, CSV, overlay video and PNG."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from tdmi.cli.common import Verbose, check_config_option, check_input_paths, console, err_console, main_for
from tdmi.errors import ConfigError, DataError, UsageError

app = typer.Typer(
    add_completion=False,
    help="Pose-track a video or frame folder with TDMI: PoseTrack18 JSON, CSV, overlay video, contact sheet.",
)


def load_predictors(
    model: str | None, config: str | None, reuse: bool, split: Path | None, device: str | None
) -> tuple[Any, Any]:
    """The clip predictor and, for --reuse-features, its per-frame split form."""
    from tdmi import runtime
    from tdmi.runtime.features import OnnxFramePredictor, frame_predictor_for
    from tdmi.spec.config import resolve_config

    if model is None and config is None:
        raise ConfigError("say which model runs: --model FILE (.pt/.onnx/.engine) or --config PRESET")
    if model is None:
        import torch

        from tdmi.model import TDMI
        from tdmi.runtime.torch_backend import TorchPredictor

        cfg = resolve_config(config)  # type: ignore[arg-type]
        warnings.warn(
            f"no --model given: {cfg.name} with random weights (tests the pipeline, not poses)", stacklevel=2
        )
        with torch.random.fork_rng():  # the same random weights on every run, so runs compare
            torch.manual_seed(0)
            net = TDMI(cfg)
        predictor: Any = TorchPredictor(net, device, source=cfg.name)
    elif model.endswith(".onnx") and split is None and reuse and not Path(model).is_file():
        fp = OnnxFramePredictor(model, device=device)  # only the split pair exists
        return fp, fp
    else:
        predictor = runtime.load(model, device=device)
    if config is not None and model is not None:
        want = resolve_config(config)
        if {**want.to_dict(), "name": ""} != {**predictor.config.to_dict(), "name": ""}:
            raise ConfigError(
                f"--config {config} does not match the model's embedded config {predictor.config.name}"
            )
    return predictor, (frame_predictor_for(predictor, split) if reuse else None)


def check_model_options(model: str | None, config: str | None) -> None:
    """Before any heavy import: the preset or config exists, the model file exists, and this
    install can run it (a preset alone or a .pt checkpoint is the PyTorch reference)."""
    check_config_option(config)
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


@app.command()
def run(
    # SOURCE and -o are required, but checked after the model options (below) so that a model this
    # install cannot run is named first, whatever else is missing.
    source: Annotated[
        Path | None, typer.Argument(help="A video file or a folder of frames (sorted by name). Required.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output folder (created if missing). Required.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Checkpoint .pt, ONNX .onnx or TensorRT .engine.")
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
    check_model_options(model, config)
    if source is None:
        raise UsageError("missing SOURCE: a video file or a folder of frames")
    if output is None:
        raise UsageError("missing --output/-o: the folder to write the results to")
    check_input_paths(
        {"SOURCE": source, "--split": split, "--annotations": annotations}
        | ({"--boxes": boxes} if boxes not in (None, "gt") else {}),
        folders=True,
    )
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tdmi.video.infer import infer_video
    from tdmi.video.pipeline import BOX_POLICIES

    if box_policy not in BOX_POLICIES:
        raise ConfigError(f"--box-policy must be one of {', '.join(BOX_POLICIES)}, got {box_policy!r}")
    if refine not in ("quarter", "dark", "none"):
        raise ConfigError(f"--refine must be quarter, dark or none, got {refine!r}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor, frame_predictor = load_predictors(model, config, reuse_features, split, device)
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
    reuse = f", cache hit rate {100 * s['cache_hit_rate']:.1f}%" if s["reuse_features"] else " (clip by clip)"
    console.print(
        f"{s['frames']} frames, {s['persons']} person(s), {s['clips']} clips in {s['wall_s']:.2f} s "
        f"({s['frames_per_s']:.2f} frames/s, {s['backend']}); backbone passes {s['backbone_passes']} "
        f"(clip by clip: {s['backbone_passes_clip_by_clip']}){reuse}; box policy {s['box_policy']}"
    )
    written = [out.json, out.csv] + [p for p in (out.overlay, out.sheet) if p is not None]
    console.print("wrote " + ", ".join(str(p) for p in written))


def main() -> None:
    main_for(app, "tdmi-infer")


if __name__ == "__main__":
    main()
