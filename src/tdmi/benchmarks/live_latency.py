"""Online (live stream) against offline (stored file) ``tdmi-infer`` on the same frames.

The frames are JPEGs served as an HTTP MJPEG stream on loopback (:mod:`tdmi.video.mjpeg_server`)
and, for the offline run, concatenated into a raw ``.mjpeg`` file that OpenCV's FFmpeg decodes the
same way. Each round runs, in alternating order: offline (frames/s), online with the stream sent as
fast as it is read (frames/s, latency), and online paced at ``--fps`` (latency from frame arrival to
poses out, p50/p99, and the part after the clip's last frame arrived). Online poses are checked equal
to offline in every round.

    python -m tdmi.benchmarks.live_latency --model tiny.onnx --frames FOLDER_OF_JPEGS --repeat 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from tdmi.benchmarks.output import emit_json
from tdmi.errors import DataError, TdmiError


def _keypoints(path: Path) -> list[list[float]]:
    return [a["keypoints"] for a in json.loads(path.read_text())["annotations"]]


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def live_vs_offline(
    model: str | Path,
    jpegs: list[bytes],
    *,
    rounds: int = 3,
    fps: float = 10.0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Paired rounds of offline / online-unpaced / online-paced over the same ``jpegs``."""
    from tdmi import runtime
    from tdmi.video.infer import infer_video
    from tdmi.video.live import infer_live
    from tdmi.video.mjpeg_server import serve_mjpeg

    if not jpegs:
        raise DataError("no frames to stream")
    options: dict[str, Any] = {"threads": threads} if threads else {}
    predictor = runtime.load(str(model), device="cpu", **options)
    rows: dict[str, list[dict[str, Any]]] = {"offline": [], "online": [], "online_paced": []}
    with tempfile.TemporaryDirectory(prefix="tdmi-live-bench-") as tmp:
        root = Path(tmp)
        mjpeg = root / "stream.mjpeg"
        mjpeg.write_bytes(b"".join(jpegs))
        reference: list[list[float]] | None = None
        for r in range(rounds):
            order = ["offline", "online", "online_paced"]
            if r % 2:
                order.reverse()
            for mode in order:
                out = root / f"{mode}-{r}"
                if mode == "offline":
                    res = infer_video(mjpeg, out, predictor, full_frame=True, overlay=False, sheet=False)
                    rows[mode].append({"frames_per_s": res.result.frames_per_s})
                    kps = _keypoints(res.json)
                else:
                    with serve_mjpeg(jpegs, fps=fps if mode == "online_paced" else None) as url:
                        live = infer_live(url, out, predictor, full_frame=True, overlay=False, sheet=False)
                    rows[mode].append(live.result.summary()["live"])
                    kps = _keypoints(live.json)
                if reference is None:
                    reference = kps
                elif kps != reference:
                    raise TdmiError(f"round {r}: {mode} poses differ from the first run's: online != offline")
    summary: dict[str, Any] = {
        "model": str(model),
        "backend": predictor.backend,
        "num_frames_T": predictor.config.num_frames,
        "frames": len(jpegs),
        "rounds": rounds,
        "paced_fps": fps,
        "offline_frames_per_s": _spread([x["frames_per_s"] for x in rows["offline"]]),
    }
    for mode in ("online", "online_paced"):
        summary[mode] = {
            key: _spread([float(x[key]) for x in rows[mode]])
            for key in ("frames_per_s", "latency_ms_p50", "latency_ms_p99", "after_window_ms_p50")
        }
    summary["online_equals_offline"] = True
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tdmi.benchmarks.live_latency", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", required=True, help="ONNX (or engine) pose model")
    p.add_argument("--frames", required=True, type=Path, help="folder of JPEG frames (sorted by name)")
    p.add_argument("--repeat", type=int, default=1, help="stream the folder this many times over")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fps", type=float, default=10.0, help="pace of the paced online run")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None, help="write the summary here")
    a = p.parse_args(argv)
    try:
        files = sorted(f for f in a.frames.iterdir() if f.suffix.lower() in (".jpg", ".jpeg"))
        jpegs = [f.read_bytes() for f in files] * max(1, a.repeat)
        result = live_vs_offline(a.model, jpegs, rounds=a.rounds, fps=a.fps, threads=a.threads)
    except (TdmiError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    emit_json(result, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
