"""The deploy-only test group: artifacts made by a full install, loaded where torch may be absent.

``TDMI_SLIM_MODELS``: a folder written by ``python tests/slim/make_models.py OUT VIDEO`` in a full
install (CI makes it, then runs this group in a venv holding only ``pip install .`` and pytest).
Without it, a full install makes the folder itself; a deploy-only install skips, saying so.
``TDMI_SLIM_REQUIRED=1`` (CI's deploy-only run) turns every skip of this group into a failure:
there, a check that ran nothing must not pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .make_models import HERE, REQUIRED, full_install


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slim)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if REQUIRED and report.skipped and item.get_closest_marker("slim") is not None:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but TDMI_SLIM_REQUIRED=1 asks every deploy-only check to run: {reason}"


@pytest.fixture(scope="session")
def fixture_video(posetrack18: Path) -> Path:
    video = posetrack18 / "videos" / "000001_mpiinew_test" / "000001_mpiinew_test.mp4"
    if not video.is_file():
        pytest.skip(f"the fixture video {video} is missing")
    return video


@pytest.fixture(scope="session")
def slim_models(fixture_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("TDMI_SLIM_MODELS")
    if given:
        folder = Path(given)
        missing = [
            n
            for n in ("tiny.onnx", "tiny.backbone.onnx", "tiny.head.onnx", "full_keypoints.npz")
            if not (folder / n).is_file()
        ]
        if missing:
            pytest.fail(f"TDMI_SLIM_MODELS={folder} lacks {missing}: run tests/slim/make_models.py there")
        return folder
    if not full_install():
        pytest.skip(
            "no artifacts to load: run `python tests/slim/make_models.py OUT VIDEO` in a full install "
            "and set TDMI_SLIM_MODELS=OUT"
        )
    from .make_models import make

    return make(tmp_path_factory.mktemp("slim-models"), fixture_video)
