"""tdmi-infer --ray on a real local Ray cluster (2 CPUs, loopback, one per module): outputs equal to the
in-process run, resume, SIGKILLed workers (nothing lost, nothing written twice), Ctrl-C, placement errors."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tdmi.cli.common import Interrupted, run_app
from tdmi.cli.infer import app, load_predictors
from tdmi.errors import ConfigError, TdmiError
from tdmi.video.batch import (
    RUN_RECORD,
    VIDEO_RECORD,
    BatchEvent,
    LocalExecutor,
    VideoOptions,
    collect_jobs,
    run_batch,
    staging_dir,
)
from tdmi.video.ray_runner import LOCAL_ONLY_ENV

os.environ.setdefault(LOCAL_ONLY_ENV, "0")  # before Ray is imported: its servers bind loopback only
ray = pytest.importorskip("ray", reason="needs the [ray] extra")

OPTS = VideoOptions(full_frame=True, overlay=False, sheet=False)
TEMP = re.compile(r"^\.(.+)\.tdmi-(\d+)-.*\.tmp$")  # tdmi.utils.atomic_dir's temp folder: .<name>.tdmi-<pid>-


@pytest.fixture(scope="module")
def cluster() -> Any:
    """One local cluster for the module (a start costs seconds): 2 CPUs, loopback, no dashboard."""
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        yield ray
    finally:
        ray.shutdown()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory, synthetic_videos: Callable[..., list[Path]]) -> Path:
    folder = tmp_path_factory.mktemp("ray") / "videos"
    synthetic_videos(folder, 8, frames=16)
    return folder


@pytest.fixture(scope="module")
def loader(tiny_onnx: Path) -> Callable[[], tuple[Any, Any]]:
    return functools.partial(load_predictors, str(tiny_onnx), None, False, None, None, 1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, videos: Path, loader: Any) -> Path:
    """The same videos run in this process, no Ray, no kills."""
    out = tmp_path_factory.mktemp("ref") / "out"
    run_batch(
        collect_jobs([videos], OPTS), out, LocalExecutor(loader(), out, OPTS), {"options": OPTS.to_dict()}
    )
    return out


def _record(out: Path) -> dict[str, Any]:
    return json.loads((out / RUN_RECORD).read_text())


def _assert_same_outputs(out: Path, ref: Path) -> None:
    for folder in sorted(ref.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        n = folder.name
        a, b = (
            json.loads((out / n / f"{n}.json").read_text()),
            json.loads((ref / n / f"{n}.json").read_text()),
        )
        assert a["annotations"] == b["annotations"] and a["images"] == b["images"], n
        assert (out / n / f"{n}.csv").read_bytes() == (ref / n / f"{n}.csv").read_bytes(), n


def _temps(out: Path) -> list[tuple[str, int]]:
    """(video, writer pid) of the videos being written now (this host's staging folder)."""
    staging = staging_dir(out)
    if not staging.is_dir():
        return []
    return [(m.group(1), int(m.group(2))) for p in staging.iterdir() if (m := TEMP.match(p.name))]


def test_cli_ray_two_workers_equals_local_and_resumes(
    cluster: Any, tmp_path: Path, videos: Path, tiny_onnx: Path, reference: Path
) -> None:
    out = tmp_path / "out"
    args = [str(videos), "--model", str(tiny_onnx), "--full-frame", "--no-overlay", "--ray", "auto"]
    assert run_app(app, [*args, "--workers", "2", "-o", str(out)]) == 0
    rec = _record(out)
    assert rec["summary"] == {"videos": 8, "done": 8, "failed": 0, "pending": 0, "frames": 128, "persons": 8}
    assert len({v["worker"] for v in rec["videos"].values()}) == 2  # both actors took videos
    _assert_same_outputs(out, reference)
    assert run_app(app, [*args, "--workers", "2", "-o", str(out)]) == 0  # again: all skipped
    rec2 = _record(out)
    assert rec2["runs"] == 2 and all(v["run"] == 1 and v["attempts"] == 1 for v in rec2["videos"].values())
    assert ray.is_initialized()  # a cluster the run joined is left running


def test_sigkill_two_workers_mid_video(
    cluster: Any, tmp_path: Path, videos: Path, loader: Any, reference: Path
) -> None:
    """Both original workers SIGKILLed while a video of theirs is half done: every video done exactly once."""
    from tdmi.video.ray_runner import RayExecutor

    out = tmp_path / "out"
    executor = RayExecutor(loader, out, OPTS, workers=2, threads=1)
    victims = set(executor.pids)
    assert len(victims) == 2 and os.getpid() not in victims
    killed: dict[int, str] = {}
    stop = threading.Event()

    def killer() -> None:  # a worker is mid-video while its temp folder .<video>.tdmi-<pid>-… exists
        while not stop.is_set() and len(killed) < 2:
            for name, pid in _temps(out):
                if pid in victims and pid not in killed:
                    os.kill(pid, signal.SIGKILL)
                    killed[pid] = name
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    events: list[BatchEvent] = []
    try:
        rec = run_batch(
            collect_jobs([videos], OPTS), out, executor, {"options": OPTS.to_dict()}, events.append
        )
    finally:
        stop.set()
        thread.join()
    assert len(killed) == 2, f"only {len(killed)} worker(s) were caught mid-video"
    retried = sorted(e.name for e in events if e.kind == "retry")
    assert retried == sorted(killed.values())
    assert sorted(e.name for e in events if e.kind == "done") == sorted(f"clip{k:02d}" for k in range(8))
    assert rec["summary"]["done"] == 8 and rec["summary"]["failed"] == 0
    for name, v in rec["videos"].items():
        assert v["attempts"] == (2 if name in retried else 1) and v.get("worker_deaths", 0) == (
            name in retried
        )
        committed = json.loads((out / name / VIDEO_RECORD).read_text())
        assert committed["worker"] == v["worker"] and committed["finished"] == v["finished"]  # written once
        assert int(v["worker"].rsplit(":", 1)[1]) not in killed  # by a live worker
    _assert_same_outputs(out, reference)
    assert not [t for t in _temps(out) if t[1] in killed]  # the killed workers' half videos are swept


def test_interrupt_then_restart_finishes_the_rest(
    cluster: Any, tmp_path: Path, videos: Path, loader: Any, reference: Path
) -> None:
    from tdmi.video.ray_runner import RayExecutor

    out = tmp_path / "out"
    jobs = collect_jobs([videos], OPTS)
    seen: list[str] = []

    def ctrl_c_after_three(e: BatchEvent) -> None:
        seen.append(e.name)
        if len(seen) == 3:
            raise Interrupted(signal.SIGINT)

    with pytest.raises(Interrupted):
        run_batch(jobs, out, RayExecutor(loader, out, OPTS, workers=2), {}, ctrl_c_after_three)
    first = {n for n, v in _record(out)["videos"].items() if v["status"] == "done"}
    assert len(first) == 3 and _record(out)["summary"]["pending"] == 5
    rec = run_batch(jobs, out, RayExecutor(loader, out, OPTS, workers=2), {})
    assert rec["summary"]["done"] == 8
    assert {n for n, v in rec["videos"].items() if v["run"] == 1} == first
    assert not _temps(out)
    _assert_same_outputs(out, reference)


def test_pool_the_cluster_cannot_place_and_bad_model(cluster: Any, tmp_path: Path, tiny_onnx: Path) -> None:
    from tdmi.video.ray_runner import RayExecutor

    with pytest.raises(ConfigError, match="fits 0 of 2 workers needing 1 CPU and 1 GPU"):
        RayExecutor(lambda: (None, None), tmp_path, OPTS, workers=2, gpus_per_worker=1)
    with pytest.raises(ConfigError, match="fits 2 of 3 workers needing 1 CPU each"):
        RayExecutor(lambda: (None, None), tmp_path, OPTS, workers=3, threads=1)
    bad = functools.partial(load_predictors, str(tmp_path / "missing.onnx"), None, False, None, None, 1)
    with pytest.raises(TdmiError, match="could not load the model"):
        RayExecutor(bad, tmp_path, OPTS, workers=1)
    assert ray.is_initialized()
