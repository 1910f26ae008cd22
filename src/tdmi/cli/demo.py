"""``tdmi-demo``: a first run that visibly works (``tdmi-infer`` on a drawn figure, shipped weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tdmi.cli.common import Verbose, console, err_console, main_for
from tdmi.cli.options import DeviceOpt, ModelOpt

app = typer.Typer(
    add_completion=False,
    help="Pose-track a drawn walking figure with the shipped synthetic tdmi-tiny weights (ONNX, no "
    "download): writes the video, its boxes and tdmi-infer's outputs.",
)


@app.command()
def run(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output folder (created if missing).")
    ] = Path("tdmi-demo"),
    model: ModelOpt = None,
    frames: Annotated[int, typer.Option("--frames", help="Video length in frames (>= 3).")] = 48,
    seed: Annotated[
        int, typer.Option("--seed", help="Which figure walks (pose, size, path, background).")
    ] = 7,
    device: DeviceOpt = None,
    verbose: Verbose = False,
) -> None:
    """Write OUTPUT/demo.mp4 and demo_boxes.csv, then tdmi-infer's demo.json/.csv/_overlay.mp4/_sheet.png."""
    from tdmi.video.demo import run_demo

    if frames < 3:
        raise typer.BadParameter(f"needs at least 3 frames, got {frames}", param_hint="--frames")
    demo = run_demo(output, model=model, frames=frames, seed=seed, device=device)
    s = demo.score
    if model is None:
        err_console.print(
            "[yellow]note:[/] the shipped weights were trained on drawn figures only: they are not pose "
            "weights and say nothing about real people",
            markup=True,
        )
    console.print(
        f"skeleton vs the drawn joints: {100 * s['pck']:.0f}% within {s['tolerance_px']:.0f} px "
        f"(10% of the figure's height), median error {s['median_px']:.1f} px, "
        f"{s['frames_with_pose']:.0f}/{s['frames']:.0f} frames"
    )
    o = demo.outputs
    written = [demo.video, demo.boxes, o.json, o.csv] + [p for p in (o.overlay, o.sheet) if p is not None]
    console.print("wrote " + ", ".join(str(p) for p in written))
    console.print(
        f"the same run by hand: tdmi-infer {demo.video} --boxes {demo.boxes} -m {demo.model} -o {output}"
    )


def main() -> None:
    main_for(app, "tdmi-demo")


if __name__ == "__main__":
    main()
