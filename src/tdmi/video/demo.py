"""A first run that visibly works: ``tdmi-infer`` on a drawn moving figure with the shipped tiny weights.

No pose weights ship with the toolkit, so every picture a newcomer could make showed random lines.
The package carries a small tdmi-tiny model trained only on the built-in synthetic stick figures
(``tdmi/data/weights``, provenance in ``WEIGHTS.md`` there): on those figures its skeleton follows
the body, which shows the whole pipeline working. It says nothing about real people, and the demo
video says so in a banner across every frame (so the overlay and the contact sheet carry it).

The demo draws a walking figure (:func:`tdmi.data.sample.moving_figure_video`), writes it as a video
with its per-frame person boxes (MOT CSV, as a detector would give), runs the same
:func:`tdmi.video.infer.infer_video` that ``tdmi-infer`` runs, and scores the predicted keypoints
against the figure's drawn joints. It runs the shipped ONNX file through ONNX Runtime and imports
no PyTorch itself, so it suits a runtime-only install.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tdmi.errors import DataError

__all__ = [
    "DEMO_BANNER",
    "DemoResult",
    "make_demo_video",
    "run_demo",
    "score_keypoints",
    "shipped_weights",
]

SHIPPED_STEM = "tdmi-tiny-synthetic"
DEMO_BANNER = (
    "SYNTHETIC WEIGHTS: trained on drawn figures only, not pose weights",
    "tdmi demo: a drawn walking figure; the skeleton is the model's",
)
BANNER_HEIGHT = 40
BANNER_X = 128  # clear of the contact sheet's "frame N" label
DEMO_SIZE = (360, 640)  # figure area (H, W); the banner is added above it
DEMO_SEED = 7  # a figure that walks a long way across the frame
DEMO_SPEED = 1.5
TOLERANCE = 0.1  # of the figure's height (head top to ankles): a joint within it "follows the figure"


def shipped_weights(kind: str = "onnx") -> Path:
    """Path of the shipped synthetic tdmi-tiny model: ``onnx`` (for ONNX Runtime) or ``pt``."""
    if kind not in ("onnx", "pt"):
        raise DataError(f"shipped weights come as 'onnx' or 'pt', not {kind!r}")
    ref = importlib.resources.files("tdmi.data").joinpath("weights", f"{SHIPPED_STEM}.{kind}")
    path = Path(str(ref))
    if not path.is_file():
        raise DataError(f"the shipped weights {path} are missing: reinstall tdmi-deploy")
    return path


@dataclass
class DemoResult:
    """What the demo wrote and how closely the predicted skeleton followed the drawn figure."""

    video: Path
    boxes: Path
    model: Path
    outputs: Any  # tdmi.video.infer.InferOutputs
    truth: np.ndarray  # [T, 17, 3] drawn joints in video pixels (x, y, labelled)
    predicted: np.ndarray  # [T, 17, 2], NaN on frames without a pose
    score: dict[str, float]


def _banner(frame: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    import cv2

    strip = np.full((BANNER_HEIGHT, frame.shape[1], 3), 20, np.uint8)
    for i, text in enumerate(lines[:2]):
        org = (BANNER_X, 16 + 18 * i)
        cv2.putText(strip, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (80, 220, 255), 1, cv2.LINE_AA)
    return np.concatenate([strip, frame], axis=0)


def make_demo_video(
    out_dir: Path,
    frames: int = 48,
    seed: int = DEMO_SEED,
    speed: float = DEMO_SPEED,
    banner: Sequence[str] = DEMO_BANNER,
    fps: float = 12.0,
) -> tuple[Path, Path, np.ndarray]:
    """Write ``demo.mp4`` (a walking figure under a two-line ``banner``) and ``demo_boxes.csv``.

    The boxes are the figure's own per-frame boxes in MOT form (frames from 1, track 1), standing in
    for a person detector. Returns (video, boxes, keypoints [T, 17, 3] in video pixels).
    """
    from tdmi.data.sample import moving_figure_video
    from tdmi.utils import write_text_atomic
    from tdmi.video.writers import overlay_video

    video, boxes = moving_figure_video(frames, DEMO_SIZE, seed=seed, speed=speed)
    truth = video.keypoints.copy()
    truth[..., 1] += BANNER_HEIGHT
    size = (DEMO_SIZE[1], DEMO_SIZE[0] + BANNER_HEIGHT)
    video_path, boxes_path = out_dir / "demo.mp4", out_dir / "demo_boxes.csv"
    with overlay_video(video_path, fps, size) as writer:  # the atomic video writer tdmi-infer uses
        for frame in video.frames:
            writer.write(_banner(frame, banner))
    rows = [
        f"{t + 1},1,{x:.2f},{y + BANNER_HEIGHT:.2f},{w:.2f},{h:.2f},1.0"
        for t, (x, y, w, h) in enumerate(boxes)
    ]
    write_text_atomic(boxes_path, "\n".join(rows) + "\n")
    return video_path, boxes_path, truth


def score_keypoints(
    predicted: np.ndarray, truth: np.ndarray, tolerance: float = TOLERANCE
) -> dict[str, float]:
    """How closely predictions [T, 17, 2] follow the drawn joints [T, 17, 3] (x, y, labelled).

    ``pck``: the share of labelled joints within ``tolerance`` x the figure's height (head top to
    lowest ankle, per frame); a frame without a prediction counts as missed. ``mean_px`` and
    ``median_px``: the distances of the predicted joints, in video pixels.
    """
    if predicted.shape[:2] != truth.shape[:2]:
        raise DataError(
            f"predictions {predicted.shape[:2]} and truth {truth.shape[:2]} differ in frames/joints"
        )
    labelled = truth[..., 2] > 0
    height = truth[:, 15:17, 1].max(axis=1) - truth[:, 2, 1]  # ankles below head top
    dist = np.linalg.norm(predicted - truth[..., :2], axis=-1)
    hit = np.where(np.isnan(dist), False, dist <= tolerance * height[:, None]) & labelled
    found = dist[labelled & ~np.isnan(dist)]
    return {
        "pck": float(hit.sum() / max(1, labelled.sum())),
        "tolerance_px": float(tolerance * height.mean()),
        "mean_px": float(found.mean()) if found.size else float("nan"),
        "median_px": float(np.median(found)) if found.size else float("nan"),
        "frames_with_pose": float((~np.isnan(predicted[:, 0, 0])).sum()),
        "frames": float(truth.shape[0]),
    }


def run_demo(
    out_dir: str | Path,
    model: str | Path | None = None,
    frames: int = 48,
    seed: int = DEMO_SEED,
    device: str | None = None,
    predictor: Any | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> DemoResult:
    """Draw the demo video, pose-track it like ``tdmi-infer`` and score the skeleton against the figure.

    ``model`` defaults to the shipped synthetic ONNX; with another model the banner names that model
    instead of calling the weights synthetic. ``predictor`` (already loaded) takes precedence.
    """
    from tdmi import runtime
    from tdmi.video.infer import infer_video

    if frames < 3:
        raise DataError(f"the demo needs at least 3 frames, got {frames}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} is a file: -o takes a folder")
    out.mkdir(parents=True, exist_ok=True)
    path = Path(model) if model is not None else shipped_weights("onnx")
    if predictor is None:
        predictor = runtime.load(str(path), device=device)
    banner = DEMO_BANNER if model is None else ("tdmi demo: a drawn walking figure", f"model {path.name}")
    video, boxes, truth = make_demo_video(out, frames, seed, banner=banner)
    outputs = infer_video(video, out, predictor, boxes=str(boxes), progress=progress)
    predicted = np.full((truth.shape[0], truth.shape[1], 2), np.nan)
    for pose in outputs.result.poses:
        predicted[pose.frame] = pose.keypoints
    return DemoResult(video, boxes, path, outputs, truth, predicted, score_keypoints(predicted, truth))
