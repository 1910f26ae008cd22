"""``tdmi-train``: train or fine-tune TDMI on PoseTrack or synthetic clips (one process or torchrun DDP)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from tdmi.cli.common import Verbose, check_input_paths, console, main_for, options_of_config
from tdmi.cli.options import ConfigOpt, NoProgressOpt
from tdmi.spec.choices import MissingFrames
from tdmi.spec.config import resolve_config
from tdmi.train.config import Optimizer, Schedule, TrainConfig

app = typer.Typer(
    add_completion=False,
    help="Train TDMI. Multi-GPU / multi-node: torchrun --nproc_per_node N -m tdmi.cli.train [same options].",
)

_D = TrainConfig()
_MILESTONES = ",".join(str(m) for m in _D.milestones)


# --------------------------------------------------------------------------- tdmi-train's own options
# Each option that sets a TrainConfig field has the field's name (TrainConfig's errors name the option).
DataOpt = Annotated[str, typer.Option("--data", help="PoseTrack root (annotations/SPLIT/) or 'synthetic'.")]
RunDirOpt = Annotated[Path, typer.Option("--output", "-o", help="Run folder (last.pt, best.pt, log.jsonl).")]
MissingFramesOpt = Annotated[
    MissingFrames, typer.Option("--missing-frames", help="Absent neighbour frame: 'error' or 'nearest'.")
]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Total optimiser steps (default: epochs).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", help="Global batch, all processes.")]
MilestonesOpt = Annotated[
    str, typer.Option("--milestones", help="Multistep decay points, fractions of the run.")
]
FreezeBnOpt = Annotated[
    int | None,
    typer.Option(
        "--freeze-bn-after",
        help="From this step on, BatchNorm uses and keeps its running statistics (0: whole run).",
    ),
]
MiWeightOpt = Annotated[
    float | None, typer.Option("--mi-weight", help="vCLUB weight (default: the model config's).")
]
FreshOpt = Annotated[
    bool, typer.Option("--fresh-clips", help="Synthetic: new clips every epoch (no batch repeats).")
]
HrnetOpt = Annotated[
    Path | None, typer.Option("--hrnet-weights", help="Canonical COCO HRNet weights (strict).")
]
OptimizerOpt = Annotated[Optimizer, typer.Option("--optimizer", help="adam or adamw.")]
ScheduleOpt = Annotated[Schedule, typer.Option("--schedule", help="multistep, cosine or constant.")]
GradClipOpt = Annotated[float, typer.Option("--grad-clip", help="Max gradient norm (0: off).")]
NoFlipOpt = Annotated[bool, typer.Option("--no-flip", help="No horizontal flip augmentation.")]
ClipsPoolOpt = Annotated[int, typer.Option("--clips-pool", help="Synthetic clips per epoch.")]
GradAccumOpt = Annotated[int, typer.Option("--grad-accum", help="Micro-batches per step per process.")]
ValEveryOpt = Annotated[int, typer.Option("--val-every", help="Epochs between validations (0: never).")]
TrainDeviceOpt = Annotated[str | None, typer.Option("--device", help="Default: cuda:LOCAL_RANK or cpu.")]
StopAfterOpt = Annotated[
    int | None, typer.Option("--stop-after", help="Stop (and save) after this many total steps.")
]


@app.command()
def run(
    config: ConfigOpt = "tdmi-tiny",
    data: DataOpt = "synthetic",
    output: RunDirOpt = Path("run"),
    split: Annotated[str, typer.Option("--split", help="Training split.")] = _D.split,
    val_split: Annotated[str, typer.Option("--val-split", help="Validation split.")] = _D.val_split,
    missing_frames: MissingFramesOpt = _D.missing_frames,
    steps: StepsOpt = None,
    epochs: Annotated[int, typer.Option("--epochs")] = _D.epochs,
    batch_size: BatchOpt = _D.batch_size,
    grad_accum: GradAccumOpt = 1,
    optimizer: OptimizerOpt = _D.optimizer,
    lr: Annotated[float, typer.Option("--lr")] = _D.lr,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = _D.weight_decay,
    schedule: ScheduleOpt = _D.schedule,
    milestones: MilestonesOpt = _MILESTONES,
    gamma: Annotated[float, typer.Option("--gamma", help="Multistep decay factor.")] = _D.gamma,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps")] = _D.warmup_steps,
    grad_clip: GradClipOpt = _D.grad_clip,
    freeze_bn_after: FreezeBnOpt = None,
    amp: Annotated[bool, typer.Option("--amp", help="float16 mixed precision (CUDA).")] = False,
    seed: Annotated[int, typer.Option("--seed")] = _D.seed,
    heatmap_weight: Annotated[float, typer.Option("--heatmap-weight")] = _D.heatmap_weight,
    mi_weight: MiWeightOpt = None,
    estimator_weight: Annotated[float, typer.Option("--estimator-weight")] = _D.estimator_weight,
    no_augment_flip: NoFlipOpt = False,
    half_body_prob: Annotated[float, typer.Option("--half-body-prob")] = _D.half_body_prob,
    scale_factor: Annotated[float, typer.Option("--scale-factor")] = _D.scale_factor,
    rotation_factor: Annotated[float, typer.Option("--rotation-factor")] = _D.rotation_factor,
    clips_pool: ClipsPoolOpt = _D.clips_pool,
    fresh_clips: FreshOpt = False,
    val_every: ValEveryOpt = 1,
    save_every: Annotated[int, typer.Option("--save-every", help="Also save last.pt every N steps.")] = 0,
    log_every: Annotated[int, typer.Option("--log-every", help="Steps between log.jsonl lines.")] = 1,
    workers: Annotated[int, typer.Option("--workers", help="DataLoader workers per process.")] = 0,
    init: Annotated[Path | None, typer.Option("--init", help="Start from this TDMI checkpoint.")] = None,
    hrnet_weights: HrnetOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in -o exactly.")] = False,
    stop_after: StopAfterOpt = None,
    device: TrainDeviceOpt = None,
    plot: Annotated[bool, typer.Option("--plot", help="Write curves.png at the end.")] = False,
    no_progress: NoProgressOpt = False,
    verbose: Verbose = False,
) -> None:
    """Train; every N epochs validate, keep best.pt and always last.pt (atomic, configs embedded)."""
    options = dict(locals())  # first: the options as given, by name
    check_input_paths({"--init": init, "--hrnet-weights": hrnet_weights})
    if data != "synthetic":
        check_input_paths({"--data": data}, folders=True)
    cfg = resolve_config(config or "tdmi-tiny")
    from tdmi.extras import require

    require("torch", "tdmi-train")
    from tdmi.train import train

    tc = train_config(options)
    res = train(
        cfg,
        tc,
        output,
        init=init,
        hrnet_weights=hrnet_weights,
        resume=resume,
        stop_after=stop_after,
        progress=not no_progress,
        plot=plot,
        device=device,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    first = res.history[0]["heatmap"] if res.history else float("nan")
    last = res.history[-1]["heatmap"] if res.history else float("nan")
    console.print(
        f"{cfg.name}: step {res.step}/{res.total_steps}, heatmap loss {first:.3e} -> {last:.3e}; "
        f"last: {res.last}" + (f", best: {res.best} ({res.best_metric:.4g})" if res.best else "")
    )
    if res.plot is not None:
        console.print(f"curves: {res.plot}")


def train_config(options: dict[str, Any]) -> TrainConfig:
    """The run's TrainConfig from the command's options: each option named as its field sets it;
    --data, --milestones and --no-flip are converted. A field's error names its option (exit 2)."""
    data, milestones = options["data"], options["milestones"]
    try:
        marks = tuple(float(m) for m in milestones.split(",") if m.strip())
    except ValueError:
        raise typer.BadParameter(
            f"--milestones must be comma-separated fractions, got {milestones!r}"
        ) from None
    given = {f.name: options[f.name] for f in dataclasses.fields(TrainConfig) if f.name in options}
    given |= {
        "data": "synthetic" if data == "synthetic" else str(Path(data)),
        "milestones": marks,
        "flip": not options["no_augment_flip"],
    }
    with options_of_config():
        return TrainConfig(**given)


def main() -> None:
    main_for(app, "tdmi-train")


if __name__ == "__main__":
    main()
