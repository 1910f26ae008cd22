"""What ``tdmi-infer --reuse-features`` buys and costs.

Speed: frames/s clip by clip against feature reuse, full-frame (every clip frame cropped the same
way, so reuse is exact), as paired rounds in one run (each round times both, order alternating),
with the ceiling measured in the same rounds: (backbone on T crops + head) / (backbone on 1 crop +
head). Accuracy: the ``frame`` and ``smoothed`` box policies against ``key`` on synthetic
moving-figure videos with known keypoints (PCK) and as agreement with ``key``.

    python -m tdmi.benchmarks.video_reuse speed --presets tdmi-w48-384x288,tdmi-w48-384x288-t5
    python -m tdmi.benchmarks.video_reuse accuracy --checkpoint synth.pt
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tdmi.errors import TdmiError
from tdmi.utils import write_text_atomic

DEFAULT_PRESETS = ("tdmi-w48-384x288", "tdmi-w48-384x288-t5")


def _frames_folder(frames: list[np.ndarray], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:06d}.png"), f)
    return folder


def _seeded_model(preset: str) -> Any:
    import torch

    from tdmi.model import TDMI, resolve_config

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TDMI(resolve_config(preset)).eval()


def _ort_artifacts(net: Any, preset: str, cache: Path) -> tuple[Path, Path, dict[str, float]]:
    """Single graph + split pair for ``net`` (cached); the pair is verified against the single graph."""
    import onnx

    from tdmi.artifacts.split import split_paths
    from tdmi.export.metadata import write_metadata
    from tdmi.export.onnx_export import build_onnx
    from tdmi.export.split_export import build_split_onnx, verify_split

    cache.mkdir(parents=True, exist_ok=True)
    single_path = cache / f"{preset}.onnx"
    bpath, hpath = split_paths(single_path)
    info_path = cache / f"{preset}.split.json"
    if single_path.is_file() and bpath.is_file() and hpath.is_file() and info_path.is_file():
        return single_path, single_path, json.loads(info_path.read_text())
    cfg = net.config
    single = build_onnx(net, cfg, batch=1)
    write_metadata(single, cfg, batch=1, extra={"weights": "random seed 0"})
    b, h = build_split_onnx(net, cfg)
    for proto, part in ((b, "backbone"), (h, "head")):
        write_metadata(proto, cfg, batch="dynamic", extra={"weights": "random seed 0", "split": part})
    report = verify_split(b, h, single, net, cfg)
    if not report.passed:
        raise TdmiError(f"{preset}: split pair fails verification: {report.summary()}")
    for proto, path in ((single, single_path), (b, bpath), (h, hpath)):
        onnx.save_model(proto, str(path))
    info = {
        "split_vs_single_max_abs": report.vs_single_graph.max_abs,
        "split_vs_torch_max_rel": report.vs_torch.max_rel,
    }
    write_text_atomic(info_path, json.dumps(info))
    return single_path, single_path, info


def _time(fn: Any, reps: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of ``fn`` (CPU time is what contention distorts least)."""
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def _predictors(
    net: Any, preset: str, backend: str, cache: Path, threads: int | None
) -> tuple[Any, Any, dict[str, float]]:
    """(clip predictor, frame predictor, the split pair's verification figures) for one backend."""
    from tdmi.runtime import load
    from tdmi.runtime.features import OnnxFramePredictor
    from tdmi.runtime.torch_backend import TorchFramePredictor, TorchPredictor

    if backend == "torch":
        return TorchPredictor(net), TorchFramePredictor(net), {}
    single, split, extra = _ort_artifacts(net, preset, cache)
    return load(single, threads=threads), OnnxFramePredictor(split, threads=threads), extra


def _one_round(
    src: Any, tracks: Any, pred: Any, fp: Any, crops: np.ndarray, stacks: list[Any], r: int
) -> dict[str, float]:
    """One paired round: both paths over the video (order alternating), then the ceiling's parts."""
    from tdmi.video import run_video

    order = ("clip", "reuse") if r % 2 == 0 else ("reuse", "clip")
    got, cpu = {}, {}
    for mode in order:
        c0 = time.process_time()
        res = (
            run_video(src, tracks, pred)
            if mode == "clip"
            else run_video(src, tracks, None, frame_predictor=fp)
        )
        cpu[mode] = time.process_time() - c0
        got[mode] = res.frames_per_s
    (bb_t, cbb_t) = _time(lambda: fp.frame_features(crops), 1)
    (bb_1, cbb_1) = _time(lambda: fp.frame_features(crops[:1]), 2)
    (hd, chd) = _time(lambda: fp.head(stacks), 2)
    return {
        "clip": got["clip"],
        "reuse": got["reuse"],
        "ratio": got["reuse"] / got["clip"],
        "ceiling": (bb_t + hd) / (bb_1 + hd),
        "cpu_ratio": cpu["clip"] / cpu["reuse"],
        "cpu_ceiling": (cbb_t + chd) / (cbb_1 + chd),
        "bb_t": bb_t,
        "bb_1": bb_1,
        "hd": hd,
    }


def _summary(per_round: list[dict[str, float]]) -> dict[str, Any]:
    """Medians and spreads of the rounds, and each round's speed-up over its own ceiling."""
    ratios = [x["ratio"] for x in per_round]
    ceilings = [x["ceiling"] for x in per_round]
    cpu_ratios = [x["cpu_ratio"] for x in per_round]
    cpu_ceilings = [x["cpu_ceiling"] for x in per_round]
    return {
        "clip_fps_median": statistics.median(x["clip"] for x in per_round),
        "reuse_fps_median": statistics.median(x["reuse"] for x in per_round),
        "speedup_median": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "ceiling_median": statistics.median(ceilings),
        "ceiling_min": min(ceilings),
        "ceiling_max": max(ceilings),
        "fraction_of_ceiling": statistics.median(ratios) / statistics.median(ceilings),
        # paired: each round's speed-up over the ceiling measured in the same round
        "fraction_of_ceiling_paired": statistics.median(
            [r / c for r, c in zip(ratios, ceilings, strict=True)]
        ),
        "rounds_speedup": ratios,
        "rounds_ceiling": ceilings,
        "cpu_speedup_median": statistics.median(cpu_ratios),
        "cpu_ceiling_median": statistics.median(cpu_ceilings),
        "rounds_cpu_speedup": cpu_ratios,
        "rounds_cpu_ceiling": cpu_ceilings,
    }


def speed(
    presets: list[str],
    backends: list[str],
    frames: int,
    rounds: int,
    cache: Path,
    threads: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    import torch

    from tdmi.data.sample import moving_figure_video
    from tdmi.video import full_frame_tracks, open_source, run_video

    if threads:
        torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tdmi-reuse-") as tmp:
        video, _ = moving_figure_video(frames, (360, 640), seed=3)
        src = open_source(_frames_folder(video.frames, Path(tmp) / "v"))
        tracks = full_frame_tracks(src.width, src.height)
        for preset in presets:
            net = _seeded_model(preset)
            cfg = net.config
            t = cfg.num_frames
            h, w = cfg.input_size
            for backend in backends:
                pred, fp, extra = _predictors(net, preset, backend, cache, threads)
                crops = np.random.default_rng(0).standard_normal((t, 3, h, w)).astype(np.float32)
                stacks = [f[None] for f in fp.frame_features(crops)]
                fp.head(stacks)  # warm-up
                run_video(src, tracks, pred)  # warm-up both paths
                run_video(src, tracks, None, frame_predictor=fp)
                per_round = []
                for r in range(rounds):
                    x = _one_round(src, tracks, pred, fp, crops, stacks, r)
                    per_round.append(x)
                    if progress:
                        print(
                            f"{preset} {backend} round {r + 1}/{rounds}: clip {x['clip']:.3f} f/s, "
                            f"reuse {x['reuse']:.3f} f/s, x{x['ratio']:.2f} (ceiling x{x['ceiling']:.2f}; "
                            f"backbone {1e3 * x['bb_t']:.0f} ms / {t} frames, {1e3 * x['bb_1']:.0f} ms / 1, "
                            f"head {1e3 * x['hd']:.0f} ms); CPU time x{x['cpu_ratio']:.2f}, "
                            f"ceiling x{x['cpu_ceiling']:.2f}",
                            file=sys.stderr,
                            flush=True,
                        )
                head = {"preset": preset, "T": t, "backend": backend, "frames": frames, "rounds": rounds}
                rows.append({**head, **_summary(per_round), **extra})
    return rows


def accuracy(
    checkpoint: Path, videos: int, frames: int, speeds: list[float], jitters: list[float], alpha: float
) -> list[dict[str, Any]]:
    """PCK@alpha (x the true box height) per policy, and agreement with the ``key`` policy."""
    from tdmi.data.sample import moving_figure_video
    from tdmi.model import load_checkpoint
    from tdmi.runtime.torch_backend import TorchFramePredictor
    from tdmi.spec.choices import BOX_POLICIES
    from tdmi.video import open_source, run_video
    from tdmi.video.boxes import BoxTrack

    net = load_checkpoint(checkpoint).eval()
    fp = TorchFramePredictor(net)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tdmi-policy-") as tmp:
        for speed_x in speeds:
            for jitter in jitters:
                err: dict[str, list[np.ndarray]] = {p: [] for p in BOX_POLICIES}  # key, frame, smoothed
                dev: dict[str, list[np.ndarray]] = {p: [] for p in ("frame", "smoothed")}
                passes: dict[str, int] = {p: 0 for p in err}
                for v in range(videos):
                    video, boxes = moving_figure_video(frames, (360, 640), seed=1000 + v, speed=speed_x)
                    rng = np.random.default_rng(v)
                    noisy = boxes.astype(np.float64).copy()
                    if jitter > 0:
                        size = noisy[:, 2:].mean(axis=1, keepdims=True)
                        noisy[:, :2] += rng.normal(0, jitter, (frames, 2)) * size
                        noisy[:, 2:] *= 1 + rng.normal(0, jitter, (frames, 2))
                    track = BoxTrack(0, {i: noisy[i] for i in range(frames)}, {})
                    src = open_source(_frames_folder(video.frames, Path(tmp) / f"s{speed_x}-j{jitter}-v{v}"))
                    preds: dict[str, np.ndarray] = {}
                    for box_policy in BOX_POLICIES:
                        res = run_video(src, [track], None, frame_predictor=fp, box_policy=box_policy)
                        preds[box_policy] = np.stack([p.keypoints for p in res.poses])
                        passes[box_policy] += res.backbone_passes
                    vis = video.keypoints[:, :, 2] > 0
                    height = boxes[:, 3][:, None]
                    for policy, kp in preds.items():
                        d = np.linalg.norm(kp - video.keypoints[:, :, :2], axis=-1) / height
                        err[policy].append(d[vis])
                    for policy in dev:
                        d = np.linalg.norm(preds[policy] - preds["key"], axis=-1) / height
                        dev[policy].append(d[vis])
                row: dict[str, Any] = {"speed": speed_x, "jitter": jitter, "videos": videos, "frames": frames}
                for policy, es in err.items():
                    e = np.concatenate(es)
                    row[f"pck_{policy}"] = float((e <= alpha).mean())
                    row[f"mean_err_{policy}"] = float(e.mean())
                    row[f"passes_{policy}"] = passes[policy]
                for policy, ds in dev.items():
                    d = np.concatenate(ds)
                    row[f"agree_{policy}"] = float((d <= alpha / 2).mean())
                    row[f"mean_dev_{policy}"] = float(d.mean())
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    return rows


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tdmi.benchmarks.video_reuse", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed", help="frames/s clip by clip vs --reuse-features, with the ceiling")
    s.add_argument("--presets", default=",".join(DEFAULT_PRESETS))
    s.add_argument("--backends", default="torch,onnxruntime")
    s.add_argument("--frames", type=int, default=6)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--cache-dir", type=Path, default=None)
    s.add_argument("--threads", type=int, default=None, help="intra-op threads, torch and ORT alike")
    a = sub.add_parser("accuracy", help="box policies vs key on synthetic moving-figure videos")
    a.add_argument("--checkpoint", type=Path, required=True, help="synthetic-trained weights (.pt)")
    a.add_argument("--videos", type=int, default=8)
    a.add_argument("--frames", type=int, default=9)
    a.add_argument("--speeds", default="1,4", help="motion multipliers of the synthetic figure")
    a.add_argument("--jitters", default="0,0.05", help="box noise, fraction of the box size (1 sigma)")
    a.add_argument("--alpha", type=float, default=0.05, help="PCK threshold, fraction of the box height")
    for q in (s, a):
        q.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from tdmi.export.pipeline import default_cache_dir

    args = _parse(argv)
    t0 = time.perf_counter()
    if args.cmd == "speed":
        cache = args.cache_dir or default_cache_dir() / "video"
        rows = speed(
            args.presets.split(","), args.backends.split(","), args.frames, args.rounds, cache, args.threads
        )
        for r in rows:
            print(
                f"{r['preset']} T={r['T']} {r['backend']}: clip {r['clip_fps_median']:.3f} f/s, reuse "
                f"{r['reuse_fps_median']:.3f} f/s -> x{r['speedup_median']:.2f} "
                f"(rounds {r['speedup_min']:.2f}..{r['speedup_max']:.2f}); "
                f"ceiling x{r['ceiling_median']:.2f} ({r['ceiling_min']:.2f}..{r['ceiling_max']:.2f}); "
                f"{100 * r['fraction_of_ceiling']:.0f}% of it (per round: "
                f"{100 * r['fraction_of_ceiling_paired']:.0f}%); CPU time x{r['cpu_speedup_median']:.2f}, "
                f"ceiling x{r['cpu_ceiling_median']:.2f}"
            )
    else:
        speeds = [float(x) for x in args.speeds.split(",")]
        jitters = [float(x) for x in args.jitters.split(",")]
        rows = accuracy(args.checkpoint, args.videos, args.frames, speeds, jitters, args.alpha)
        for r in rows:
            print(
                f"speed x{r['speed']:g}, jitter {r['jitter']:g}: PCK@{args.alpha:g} key {r['pck_key']:.3f}, "
                f"frame {r['pck_frame']:.3f}, smoothed {r['pck_smoothed']:.3f}; agreement with key "
                f"(<= {args.alpha / 2:g} box): frame {r['agree_frame']:.3f}, "
                f"smoothed {r['agree_smoothed']:.3f}; backbone passes key/frame/smoothed "
                f"{r['passes_key']}/{r['passes_frame']}/{r['passes_smoothed']}"
            )
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json is not None:
        write_text_atomic(args.json, json.dumps({"command": args.cmd, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
