"""What ``tdmi-infer --ray`` scales to and what it survives (issue 22's goals).

scaling: the same short videos on 1 and on 2 Ray workers (1 intra-op thread each) on one local
cluster, as paired rounds in one run (order alternating), timing each batch from the first video
submitted to the last one committed (actors are started and their predictors loaded before the
clock starts; their start-up is reported apart). The machine's load average is recorded per round,
and the workers' own CPU seconds (frames per CPU-second: what the pool gets done with the CPU it
was given, which on a shared machine separates the design's scaling from the machine's load).

kill: one run of the videos on 2 workers during which both original workers are SIGKILLed while a
video of theirs is half done; checks every video done exactly once, outputs equal to a run without
kills.

    python -m tdmi.benchmarks.ray_batch scaling --model tiny.onnx --rounds 5 --json out.json
    python -m tdmi.benchmarks.ray_batch kill --model tiny.onnx --json out.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tdmi.errors import TdmiError
from tdmi.utils import write_text_atomic
from tdmi.video.batch import VideoOptions, collect_jobs, run_batch, staging_dir

OPTS = VideoOptions(full_frame=True, overlay=False, sheet=False)
TEMP = re.compile(r"^\.(.+)\.tdmi-(\d+)-.*\.tmp$")


def load_onnx(path: str, threads: int) -> tuple[Any, None]:
    """The worker's predictor (module level, so Ray pickles it by reference)."""
    from tdmi import runtime

    return runtime.load(path, threads=threads), None


def write_videos(folder: Path, count: int, frames: int, size: tuple[int, int] = (96, 128)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    for k in range(count):
        writer = cv2.VideoWriter(str(folder / f"v{k:02d}.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (w, h))
        for i in range(frames):
            img = np.full((h, w, 3), 30 + 20 * k, np.uint8)
            cv2.circle(img, (10 + i % (w - 20), 20 + (3 * k) % (h - 40)), 10, (200, 120, 40 + 15 * k), -1)
            writer.write(img)
        writer.release()
    return folder


def _load() -> float:
    return (
        float(Path("/proc/loadavg").read_text().split()[0])
        if Path("/proc/loadavg").exists()
        else float("nan")
    )


def _run(videos: Path, out: Path, model: str, workers: int, on_start: Any = None) -> dict[str, Any]:
    from tdmi.video.ray_runner import RayExecutor

    t0 = time.perf_counter()
    executor = RayExecutor(functools.partial(load_onnx, model, 1), out, OPTS, workers=workers, threads=1)
    pids = list(executor.pids)
    cpu0 = _cpu_s(pids)
    ready = time.perf_counter()
    if on_start is not None:
        on_start(executor)
    record = run_batch(collect_jobs([videos], OPTS), out, executor, {"options": OPTS.to_dict()})
    end = time.perf_counter()
    return {"record": record, "startup_s": ready - t0, "batch_s": end - ready, "cpu_s": _cpu_s(pids) - cpu0}


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of the worker processes so far (Linux /proc; nan elsewhere or when gone)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _spread(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def scaling(model: str, rounds: int, videos: int, frames: int) -> dict[str, Any]:
    import ray

    with tempfile.TemporaryDirectory(prefix="tdmi-ray-bench-") as tmp:
        root = Path(tmp)
        src = write_videos(root / "videos", videos, frames)
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
        rows = []
        try:
            for r in range(rounds):
                row: dict[str, Any] = {"round": r, "load_before": _load()}
                for workers in (1, 2) if r % 2 == 0 else (2, 1):
                    res = _run(src, root / f"out-{r}-{workers}", model, workers)
                    assert res["record"]["summary"]["done"] == videos
                    row[f"w{workers}_batch_s"] = res["batch_s"]
                    row[f"w{workers}_startup_s"] = res["startup_s"]
                    row[f"w{workers}_frames_per_cpu_s"] = videos * frames / res["cpu_s"]
                row["speedup"] = row["w1_batch_s"] / row["w2_batch_s"]
                row["load_after"] = _load()
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            ray.shutdown()
    total = videos * frames
    return {
        "videos": videos,
        "frames_per_video": frames,
        "rounds": rows,
        "speedup": _spread([r["speedup"] for r in rows]),
        "w1_frames_per_s": _spread([total / r["w1_batch_s"] for r in rows]),
        "w2_frames_per_s": _spread([total / r["w2_batch_s"] for r in rows]),
        "w1_frames_per_cpu_s": _spread([r["w1_frames_per_cpu_s"] for r in rows]),
        "w2_frames_per_cpu_s": _spread([r["w2_frames_per_cpu_s"] for r in rows]),
        "load": _spread([r["load_before"] for r in rows] + [r["load_after"] for r in rows]),
    }


def _outputs(out: Path) -> dict[str, tuple[Any, bytes]]:
    res = {}
    for d in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        doc = json.loads((d / f"{d.name}.json").read_text())
        res[d.name] = (doc["annotations"], (d / f"{d.name}.csv").read_bytes())
    return res


def kill(model: str, videos: int, frames: int) -> dict[str, Any]:
    import ray

    with tempfile.TemporaryDirectory(prefix="tdmi-ray-kill-") as tmp:
        root = Path(tmp)
        src = write_videos(root / "videos", videos, frames)
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
        try:
            clean = _run(src, root / "clean", model, 2)
            out = root / "killed"
            killed: dict[int, str] = {}
            stop = threading.Event()

            def start_killer(executor: Any) -> None:
                victims = set(executor.pids)

                def loop() -> None:
                    while not stop.is_set() and len(killed) < 2:
                        staging = staging_dir(out)
                        for p in staging.iterdir() if staging.is_dir() else []:
                            m = TEMP.match(p.name)
                            if m and int(m.group(2)) in victims and int(m.group(2)) not in killed:
                                os.kill(int(m.group(2)), signal.SIGKILL)
                                killed[int(m.group(2))] = m.group(1)
                        time.sleep(0.005)

                threading.Thread(target=loop, daemon=True).start()

            try:
                res = _run(src, out, model, 2, start_killer)
            finally:
                stop.set()
            rec = res["record"]
            vids = rec["videos"]
            same = _outputs(out) == _outputs(root / "clean")
            once = all(
                json.loads((out / n / "video.json").read_text())["finished"] == v["finished"]
                for n, v in vids.items()
            )
            leftovers = [p.name for p in staging_dir(out).iterdir()]
        finally:
            ray.shutdown()
    return {
        "videos": videos,
        "frames_per_video": frames,
        "killed_mid_video": sorted(killed.values()),
        "worker_deaths": sum(int(v.get("worker_deaths", 0)) for v in vids.values()),
        "done": rec["summary"]["done"],
        "attempts": {n: v["attempts"] for n, v in vids.items()},
        "outputs_equal_to_run_without_kills": same,
        "each_written_once": once,
        "temp_folders_left": leftovers,
        "batch_s_with_kills": res["batch_s"],
        "batch_s_without_kills": clean["batch_s"],
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tdmi.benchmarks.ray_batch", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("what", choices=("scaling", "kill"))
    p.add_argument("--model", required=True, help="ONNX model (e.g. tdmi-export onnx --config tdmi-tiny)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--frames", type=int, default=40, help="frames per video")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from tdmi.video.ray_runner import LOCAL_ONLY_ENV

    os.environ.setdefault(LOCAL_ONLY_ENV, "0")  # loopback only (see ray_runner), before Ray is imported
    try:
        if args.what == "scaling":
            result = scaling(args.model, args.rounds, args.videos, args.frames)
        else:
            result = kill(args.model, args.videos, args.frames)
    except TdmiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result["load_now"] = _load()
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1))
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
