"""Cold start of the deployed part: ``import tdmi.runtime`` to the first keypoints, in fresh processes.

``python -m tdmi.benchmarks.cold_start --model tiny.onnx --video clip.mp4 --python A [--python B]``
runs, round after round, one fresh process per interpreter in turn (A B A B ...: paired rounds, so
the ratio holds when the machine's speed drifts). Each child times, with its own clock, the span
from just before ``import tdmi.runtime`` to the first keypoints of the video's first clip (ONNX
Runtime, CPU, one full-frame box), and reports which heavy modules it had loaded by then. Used by
CI to compare the deploy-only venv with the full one; standard library only in the parent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

HEAVY = ("torch", "torchvision", "onnx", "onnxscript", "onnxslim", "onnx_graphsurgeon", "matplotlib")

# The child: the clock starts before tdmi is imported; the frames are read inside the span too.
CHILD = """
import json, sys, time
t0 = time.perf_counter()
import tdmi.runtime
import cv2
model, video = sys.argv[1], sys.argv[2]
predictor = tdmi.runtime.load(model, device="cpu")
cap = cv2.VideoCapture(video)
frames = []
while len(frames) < predictor.config.num_frames:
    ok, frame = cap.read()
    if not ok:
        break
    frames.append(frame)
cap.release()
if not frames:
    sys.exit(f"no frames could be read from {video}")
frames += [frames[-1]] * (predictor.config.num_frames - len(frames))
h, w = frames[0].shape[:2]
keypoints, scores = predictor.predict_keypoints(frames, [[0, 0, w, h]])
seconds = time.perf_counter() - t0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in set(sys.argv[3].split(",")))
print(json.dumps({"cold_s": seconds, "heavy": heavy, "keypoints": keypoints.tolist()}))
"""


def cold_start_once(python: str, model: Path, video: Path, env: dict[str, str] | None = None) -> dict:
    """One fresh process: its cold-start seconds, heavy modules loaded, first keypoints."""
    proc = subprocess.run(
        [python, "-c", CHILD, str(model), str(video), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"{python}: the cold-start child failed (exit {proc.returncode}): {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _env_for(spec: str) -> tuple[str, dict[str, str]]:
    """``PYTHON`` or ``PYTHON::PYTHONPATH`` (a source tree on the path, e.g. another checkout)."""
    python, _, path = spec.partition("::")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if path:
        env["PYTHONPATH"] = path
    return python, env


def run(pythons: Sequence[str], model: Path, video: Path, rounds: int) -> dict:
    runs: dict[str, list[dict]] = {p: [] for p in pythons}
    for _ in range(rounds):
        for spec in pythons:
            python, env = _env_for(spec)
            runs[spec].append(cold_start_once(python, model, video, env))
    out: dict = {"model": str(model), "video": str(video), "rounds": rounds, "interpreters": {}}
    first = pythons[0]
    for spec, rs in runs.items():
        secs = [r["cold_s"] for r in rs]
        entry = {
            "cold_s": {"min": min(secs), "median": statistics.median(secs), "max": max(secs)},
            "heavy_modules": sorted({m.split(".")[0] for r in rs for m in r["heavy"]}),
        }
        if spec != first:
            ratios = [a["cold_s"] / b["cold_s"] for a, b in zip(runs[first], rs, strict=True)]
            entry["ratio_first_over_this"] = {
                "min": min(ratios),
                "median": statistics.median(ratios),
                "max": max(ratios),
            }
            diff = max(
                abs(x - y)
                for a, b in zip(runs[first], rs, strict=True)
                for ka, kb in zip(a["keypoints"], b["keypoints"], strict=True)
                for pa, pb in zip(ka, kb, strict=True)
                for x, y in zip(pa, pb, strict=True)
            )
            entry["max_keypoint_diff_px_vs_first"] = diff
        out["interpreters"][spec] = entry
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tdmi.benchmarks.cold_start", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--model", type=Path, required=True, help="A tdmi ONNX file (tdmi-export onnx).")
    ap.add_argument("--video", type=Path, required=True, help="A video whose first clip is predicted.")
    ap.add_argument(
        "--python",
        action="append",
        default=None,
        help="Interpreter to time, repeatable (PYTHON or PYTHON::PYTHONPATH); default: this one.",
    )
    ap.add_argument("--rounds", type=int, default=5, help="Paired rounds (default 5).")
    ap.add_argument("--json", type=Path, default=None, help="Also write the result here.")
    args = ap.parse_args(argv)
    for p in (args.model, args.video):
        if not p.is_file():
            ap.error(f"{p} not found")
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    from tdmi.benchmarks.output import emit_json

    emit_json(run(args.python or [sys.executable], args.model, args.video, args.rounds), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
