"""Shared fixtures, the markers for what a test needs, and the cache isolation every test runs under.

Real PoseTrack18 files are read from ../shared (never copied into the repo).

Markers (the one place they are mapped to "is it here?"): a test marked ``rtx`` / ``modelopt`` /
``serve`` / ``tensorrt`` / ``cuda`` / ``nvcc`` is skipped, with the reason and the install command,
where that is absent, so the README's set-up line followed by its test command passes whichever
optional extras are installed; ``without("tensorrt", reason=...)`` marks a test of the path for an
absence, skipped (with that reason) where the thing is present. A test that needs an extra and is
not marked fails there instead: ``TDMI_TEST_HIDE_EXTRAS=rtx,serve`` makes the named extras
unimportable for the whole run to find such tests without uninstalling anything
(tests/test_conftest.py does that).

Caches: a test run never writes into the user's real cache; ``TDMI_CACHE_DIR``, ``XDG_CACHE_HOME``
(which the artifact cache and torch read) and ``MPLCONFIGDIR`` point into one temporary folder for
the whole session, subprocesses included.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pytest

from tdmi.plugins.availability import (
    Availability,
    cuda_gpu_available,
    nvcc_available,
    tensorrt_available,
    torch_cuda_available,
)

if TYPE_CHECKING:
    from tdmi.model import TDMI

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDMI_SHARED", REPO.parent / "shared"))
POSETRACK18 = SHARED / "fixtures" / "posetrack18"
REFERENCE = SHARED / "reference"

# The cache environment the code (and the libraries it drives) reads -> its folder in the session's
# temporary cache (matplotlib keeps its font cache in MPLCONFIGDIR, else ~/.config/matplotlib).
CACHE_ENV: dict[str, str] = {"TDMI_CACHE_DIR": "tdmi", "XDG_CACHE_HOME": "", "MPLCONFIGDIR": "matplotlib"}
# Optional extras (pyproject) -> the top-level modules they provide.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "rtx": ("tensorrt_rtx_libs", "tensorrt_rtx_bindings"),
    "modelopt": ("modelopt",),
    "serve": ("tritonclient", "pytriton"),
    "trt": ("tensorrt",),
    "cuda": ("cupy",),
}
HIDE_ENV = "TDMI_TEST_HIDE_EXTRAS"


def _modules_present(extra: str, hint: str) -> Availability:
    missing = [m for m in EXTRA_MODULES[extra] if importlib.util.find_spec(m) is None]
    return Availability(not missing, f"{', '.join(missing)} not installed: {hint}" if missing else "")


def _rtx() -> Availability:
    from tdmi.plugins.rtx import rtx_available  # imports nothing heavy until asked

    return rtx_available()


def _cuda() -> Availability:
    """A CUDA GPU seen by the driver (cuda-python) and by PyTorch (the launcher takes torch tensors)."""
    driver = cuda_gpu_available()
    return driver if not driver else torch_cuda_available()


def _tensorrt() -> Availability:
    trt = tensorrt_available()
    return trt if not trt else cuda_gpu_available()


# marker -> (description for --markers, availability check)
MARKERS: dict[str, tuple[str, Callable[[], Availability]]] = {
    "tensorrt": ("needs TensorRT (pip install 'tdmi-deploy[trt]') and an NVIDIA GPU", _tensorrt),
    "cuda": ("needs a CUDA GPU (driver via cuda-python, and PyTorch with CUDA)", _cuda),
    "nvcc": ("needs the CUDA compiler nvcc on PATH", nvcc_available),
    "rtx": ("needs TensorRT-RTX: pip install 'tdmi-deploy[rtx]' (no GPU needed)", _rtx),
    "modelopt": (
        "needs NVIDIA ModelOpt (FP16, TensorRT INT8)",
        lambda: _modules_present("modelopt", "pip install 'tdmi-deploy[modelopt]'"),
    ),
    "serve": (
        "needs Triton (tritonclient, nvidia-pytriton)",
        lambda: _modules_present(
            "serve",
            "pip install 'tdmi-deploy[serve]' and pip install --no-deps tritonclient nvidia-pytriton "
            "(README, Serving)",
        ),
    ),
}
# ``@pytest.mark.without("tensorrt", reason=...)``: the opposite of a need marker, by the same probe.
WITHOUT = "without"


@cache
def availability(marker: str) -> Availability:
    """Whether what ``marker`` stands for is here (asked once per run)."""
    return MARKERS[marker][1]()


def _install_hider(extras: Iterable[str]) -> None:
    """Make the modules of ``extras`` unimportable, as if never installed (find_spec says None)."""
    import sys
    from importlib.machinery import PathFinder

    hidden = frozenset(m for e in extras for m in EXTRA_MODULES[e.strip()])

    class _Hide:
        @staticmethod
        def find_spec(name: str, path: object = None, target: object = None) -> object:
            if name.partition(".")[0] in hidden:
                return None
            return PathFinder.find_spec(name, path, target)  # type: ignore[arg-type]

        @staticmethod
        def invalidate_caches() -> None:
            PathFinder.invalidate_caches()

        @staticmethod
        def find_distributions(*args: object, **kwargs: object) -> object:
            return PathFinder.find_distributions(*args, **kwargs)  # type: ignore[arg-type]

    for name in [m for m in sys.modules if m.partition(".")[0] in hidden]:
        del sys.modules[name]
    sys.meta_path[:] = [_Hide if f is PathFinder else f for f in sys.meta_path]


_CACHE_ROOT: Path | None = None
_SAVED_ENV: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    for name, (description, _) in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}; skipped with the reason where absent")
    config.addinivalue_line(
        "markers",
        f"{WITHOUT}(name, reason): tests the path for an absent {'/'.join(MARKERS)}; skipped with the reason "
        "where it is present",
    )
    if os.environ.get(HIDE_ENV):
        _install_hider(e for e in os.environ[HIDE_ENV].split(",") if e.strip())
    # Before collection: modules imported while collecting (matplotlib) may pick their cache then.
    global _CACHE_ROOT
    _CACHE_ROOT = Path(tempfile.mkdtemp(prefix="tdmi-test-cache-"))
    for name, sub in CACHE_ENV.items():
        _SAVED_ENV[name] = os.environ.get(name)
        os.environ[name] = str(_CACHE_ROOT / sub)


def pytest_unconfigure(config: pytest.Config) -> None:
    for name, value in _SAVED_ENV.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if _CACHE_ROOT is not None:
        shutil.rmtree(_CACHE_ROOT, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        needs = dict.fromkeys(m.name for m in item.iter_markers() if m.name in MARKERS)
        missing = [found.reason for name in needs if not (found := availability(name))]
        if missing:
            item.add_marker(pytest.mark.skip(reason="; ".join(missing)))
        # The path for an absence runs only where the thing is absent, by the same probe.
        present = [
            m.kwargs["reason"] for m in item.iter_markers(WITHOUT) if availability(_without_name(m, item))
        ]
        if present:
            item.add_marker(pytest.mark.skip(reason="; ".join(present)))


def _without_name(mark: pytest.Mark, item: pytest.Item) -> str:
    if len(mark.args) != 1 or mark.args[0] not in MARKERS or not mark.kwargs.get("reason"):
        raise pytest.UsageError(
            f"{item.nodeid}: use @pytest.mark.{WITHOUT}(NAME, reason=...) with NAME one of {sorted(MARKERS)}"
        )
    return str(mark.args[0])


@pytest.fixture(scope="session", autouse=True)
def isolated_cache() -> Iterator[Path]:
    """The session's cache folder; fails loudly if something re-pointed the cache at the real one."""
    assert _CACHE_ROOT is not None
    for name in CACHE_ENV:
        assert Path(os.environ[name]).is_relative_to(_CACHE_ROOT), f"{name} escaped the test cache"
    yield _CACHE_ROOT


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


# The tiny model's artifacts, made once per session and shared by every file that needs them (the export
# is the slow part of many tests). They are read-only: a test that changes one copies it to tmp_path.


@pytest.fixture(scope="session")
def tiny_net() -> TDMI:
    """tdmi-tiny with the seeded random weights (seed 0) that every command uses without a checkpoint,
    so the same weights as in the ``tiny_*`` exports below. Shared: never train or change it in place."""
    import torch

    from tdmi.model import TDMI

    with torch.random.fork_rng():  # the same weights as the exporter's, the caller's RNG untouched
        torch.manual_seed(0)
        return TDMI.from_preset("tdmi-tiny").eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_net: TDMI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_net`` saved as a checkpoint (config embedded)."""
    from tdmi.model import save_checkpoint

    return save_checkpoint(tiny_net, tmp_path_factory.mktemp("tiny_checkpoint") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tdmi-tiny (random weights, seed 0) exported to ONNX once per test session (batch 1, by the CLI)."""
    from tdmi.cli.common import run_app
    from tdmi.cli.export import app as export_app

    out = tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx"
    assert run_app(export_app, ["onnx", "--config", "tdmi-tiny", "--no-verify", "-o", str(out)]) == 0
    return out


def _export_tiny(folder: Path, batch: int | Literal["dynamic"]) -> Path:
    from tdmi.export import export_onnx

    path = folder / "tiny.onnx"
    with pytest.warns(UserWarning, match="random weights"):
        export_onnx("tdmi-tiny", path, batch=batch, verify=False, progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_onnx_dynamic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tdmi-tiny (random weights, seed 0: ``tiny_net``) exported with a dynamic batch, native DCN."""
    return _export_tiny(tmp_path_factory.mktemp("tiny_dynamic"), "dynamic")


@pytest.fixture(scope="session")
def tiny_onnx_b2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tdmi-tiny (random weights, seed 0: ``tiny_net``) exported with a static batch of 2, native DCN."""
    return _export_tiny(tmp_path_factory.mktemp("tiny_b2"), 2)


@pytest.fixture(scope="session")
def tiny_calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke calibration set for tdmi-tiny (4 built-in sample clips), saved as ``.npz``."""
    from tdmi.export import build_calibration_set

    with pytest.warns(UserWarning):  # smoke-only calibration: loud by design
        calib = build_calibration_set("tdmi-tiny", None, num_clips=4)
    return calib.save(tmp_path_factory.mktemp("tiny_calib") / "calib.npz")


@pytest.fixture(scope="session")
def tiny_exports(tiny_onnx_dynamic: Path, tiny_onnx_b2: Path, tiny_calib: Path) -> dict[str, Path]:
    """What an engine build needs: ``dynamic`` and ``static2`` exports and a ``calib`` set."""
    return {"dynamic": tiny_onnx_dynamic, "static2": tiny_onnx_b2, "calib": tiny_calib}


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
