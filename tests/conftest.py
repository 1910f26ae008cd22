"""Shared fixtures. Real PoseTrack18 files are read from ../shared (never copied into the repo)."""

from __future__ import annotations

import os
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
