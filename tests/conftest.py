"""Shared fixtures. Real PoseTrack18 files are read from ../shared (never copied into the repo)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDMI_SHARED", REPO.parent / "shared"))
POSETRACK18 = SHARED / "fixtures" / "posetrack18"
REFERENCE = SHARED / "reference"


@pytest.fixture(scope="session")
def posetrack18() -> Path:
    if not POSETRACK18.is_dir():
        pytest.skip(f"PoseTrack18 fixtures not found at {POSETRACK18} (set TDMI_SHARED)")
    return POSETRACK18


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference state-dict shapes not found at {REFERENCE} (set TDMI_SHARED)")
    return REFERENCE


@pytest.fixture(scope="session")
def sample_clip_frames(posetrack18: Path) -> list[Path]:
    """The real 5-frame PoseTrack clip (1280x720 JPEGs)."""
    frames = sorted((posetrack18 / "videos" / "000001_mpiinew_test").glob("*.jpg"))
    assert len(frames) == 5
    return frames


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tdmi-tiny (random weights, seed 0) exported to ONNX once per test session."""
    from tdmi.cli.common import run_app
    from tdmi.cli.export import app as export_app

    out = tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx"
    assert run_app(export_app, ["onnx", "--config", "tdmi-tiny", "--no-verify", "-o", str(out)]) == 0
    return out


def _write_synthetic_videos(
    folder: Path, count: int, frames: int = 12, size: tuple[int, int] = (64, 80)
) -> list[Path]:
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    w, h = size
    for k in range(count):
        path = folder / f"clip{k:02d}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
        assert writer.isOpened()
        for i in range(frames):
            img = np.full((h, w, 3), 30 + 20 * k, np.uint8)
            cv2.circle(img, (10 + 2 * i, 20 + 3 * k % (h - 20)), 8, (200, 120, 40 + 15 * k), -1)
            writer.write(img)
        writer.release()
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def synthetic_videos() -> Callable[..., list[Path]]:
    """``make(folder, count, frames=12, size=(w, h))``: short mp4 clips (a moving disc), each different."""
    return _write_synthetic_videos
