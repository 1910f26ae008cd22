"""Options that several ``tdmi-*`` commands share, declared once.

Each is an ``Annotated`` type: a command writes ``threads: Threads = None`` and gets the same flag,
help text and value checking as every other command. Fixed choices are ``Literal`` types (typer
>= 0.19 offers them as choices and answers a wrong value with exit 2), taken from the ground
layer's one home of each value set. Option groups (the serving options) come with the function that
turns them into their config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from tdmi.artifacts.onnx_meta import CalibChoice
from tdmi.cli.common import options_of_config, preset_or_json
from tdmi.errors import UsageError
from tdmi.spec.choices import Backend, MissingFrames
from tdmi.spec.decoding import Refine

_DEVICE = re.compile(r"cpu|auto|cuda(:\d+)?")


def device_choice(value: str | None) -> str | None:
    """``--device``: cpu, cuda, cuda:N or auto (a pattern, not a fixed list: N is the GPU index)."""
    if value is not None and not _DEVICE.fullmatch(value):
        raise typer.BadParameter(f"{value!r} is not one of cpu, cuda, cuda:N (N = GPU index), auto")
    return value


# --------------------------------------------------------------------------- model and inputs
ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Preset name or config JSON.", callback=preset_or_json),
]
CheckpointOpt = Annotated[Path | None, typer.Option("--checkpoint", help="TDMI checkpoint (.pt).")]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Checkpoint .pt, ONNX .onnx, OpenVINO IR .xml or TensorRT .engine to run."
    ),
]
BackendOpt = Annotated[
    Backend | None,
    typer.Option(
        "--backend",
        help="Engine for the model file (default: from its suffix); openvino runs a decomposed .onnx.",
    ),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", help="cpu, cuda, cuda:N or auto (default).", callback=device_choice),
]
RefineOpt = Annotated[Refine, typer.Option("--refine", help="Heatmap decoding: quarter, dark or none.")]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", help="Intra-op threads of each CPU backend (default: its own).")
]
NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="No progress bars.")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write the results to this JSON.")]
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
    max_batch: int, preferred_batch: str, max_queue_delay_us: int, instances: int, refine: Refine, **more: Any
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


# --- export
BatchOpt = Annotated[str, typer.Option("--batch", help="Fixed batch size N, or 'dynamic'.")]
CalibMethodOpt = Annotated[
    CalibChoice,
    typer.Option(
        "--calib-method",
        help="INT8 ranges: max, percentile or entropy (auto: the measured default recipe's).",
    ),
]
MaxDropOpt = Annotated[
    float | None,
    typer.Option(
        "--max-drop",
        help="INT8: search the recipe (regions kept in higher precision, calibration, per-channel, op "
        "types) whose PCK drop vs FP32 on held-out synthetic clips stays within this many points; "
        "fastest wins.",
    ),
]
OpTypesOpt = Annotated[
    str | None,
    typer.Option(
        "--op-types",
        help="INT8: ONNX op types to quantize, comma-separated (e.g. Conv). Default: the target's own "
        "(ORT: Conv,Gemm,MatMul; TensorRT: ModelOpt's set, also adds, pooling, resize, concat; "
        "OpenVINO: NNCF's set; 'all').",
    ),
]
ExportCheckpointOpt = Annotated[
    Path | None, typer.Option("--checkpoint", help="TDMI checkpoint (omit: random weights).")
]
MinSpeedupOpt = Annotated[
    float | None,
    typer.Option(
        "--min-speedup",
        help="With --max-drop: choose only recipes at least this much faster than FP32 "
        "(default 1: never an INT8 graph slower than FP32).",
    ),
]


# --- bench
# The PoseTrack harness options tdmi-bench shares with the commands that read PoseTrack.
PoseTrackSplitOpt = Annotated[str, typer.Option("--split", help="PoseTrack annotation split to read.")]
PoseTrackBoxesOpt = Annotated[
    str, typer.Option("--boxes", help="'gt' or a COCO-style detections JSON (COCO results).")
]
MissingFramesOpt = Annotated[
    MissingFrames,
    typer.Option("--missing-frames", help="'nearest': use the nearest frame on disk for absent neighbours."),
]
