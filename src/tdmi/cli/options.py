"""Options that several ``tdmi-*`` commands share, declared once.

Each is an ``Annotated`` type: a command writes ``threads: Threads = None`` and gets the same flag,
help text and value checking as every other command. Fixed choices are ``Literal`` types (typer
>= 0.19 offers them as choices and answers a wrong value with exit 2), taken from the ground
layer's one home of each value set. Option groups (the serving options) come with the function that
turns them into their config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from tdmi.cli.common import options_of_config, preset_or_json
from tdmi.errors import UsageError
from tdmi.spec.decoding import Refine

Device = Literal["cpu", "cuda", "auto"]

# --------------------------------------------------------------------------- model and inputs
ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Preset name or config JSON.", callback=preset_or_json),
]
CheckpointOpt = Annotated[Path | None, typer.Option("--checkpoint", help="TDMI checkpoint (.pt).")]
DeviceOpt = Annotated[
    Device | None, typer.Option("--device", help="Where torch and ORT run (default: auto).")
]
RefineOpt = Annotated[Refine, typer.Option("--refine", help="Heatmap decoding: quarter, dark or none.")]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", help="Intra-op threads of each CPU backend (default: its own).")
]
NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="No progress bars.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]

# --------------------------------------------------------------------------- calibration
CalibOpt = Annotated[
    Path | None,
    typer.Option("--calib", help="PoseTrack folder or calibration .npz (omit: built-in smoke-test clips)."),
]
CalibClipsOpt = Annotated[int, typer.Option("--calib-clips", help="Calibration clips to use.")]

# --------------------------------------------------------------------------- serving (ServeConfig)
MaxBatchOpt = Annotated[int, typer.Option("--max-batch", help="max_batch_size of the heatmap model.")]
PreferredBatchOpt = Annotated[
    str, typer.Option("--preferred-batch", help="Dynamic batcher's preferred sizes, comma-separated.")
]
MaxQueueDelayOpt = Annotated[
    int, typer.Option("--max-queue-delay-us", help="Longest a request waits to be batched (microseconds).")
]
InstancesOpt = Annotated[int, typer.Option("--instances", help="Model instances (instance_group count).")]
PoseRefineOpt = Annotated[
    Refine, typer.Option("--refine", help="Keypoint decoding of tdmi_pose: dark, quarter or none.")
]


def parse_sizes(text: str, option: str) -> tuple[int, ...]:
    """Comma-separated positive integers (batch sizes, levels), or a UsageError naming ``option``."""
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{option} must be comma-separated positive integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise UsageError(f"{option} must be comma-separated positive integers, got {text!r}")
    return sizes


def serve_settings(
    max_batch: int, preferred_batch: str, max_queue_delay_us: int, instances: int, refine: str, **more: Any
) -> Any:
    """The ``ServeConfig`` of the serving options (tdmi-serve, tdmi-export triton); a field's error
    names its option."""
    from tdmi.serve import ServeConfig

    with options_of_config(max_batch_size="max_batch", preferred_batch_sizes="preferred_batch"):
        return ServeConfig(
            max_batch_size=max_batch,
            preferred_batch_sizes=parse_sizes(preferred_batch, "--preferred-batch"),
            max_queue_delay_us=max_queue_delay_us,
            instances=instances,
            refine=refine,
            **more,
        )
