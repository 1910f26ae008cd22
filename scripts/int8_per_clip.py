"""Per-clip view of INT8 recipes against the FP32 graph on held-out synthetic clips.

Why: a recipe that "beats" its FP32 reference must be explained, not reported. This splits the
held-out clips by how the FP32 graph does on them (clips it fails, PCK@0.05 < 0.5, vs the rest) and
prints each recipe's PCK on both groups, with the largest heatmap value per group (runaway
activations show up as peaks far above 1). Usage:

    python scripts/int8_per_clip.py CACHE/model-fp32.onnx --clips 96 --calib-clips 16
    python scripts/int8_per_clip.py CACHE/model-fp32.onnx --skip-recipes --graph TRT_INT8.onnx
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx

from tdmi.eval.metrics import failed_clip_mask, pck_hits, per_clip_pck
from tdmi.eval.synthetic import predict_keypoints, synthetic_set
from tdmi.export.calibration import load_calibration
from tdmi.export.int8_recipes import Int8Recipe
from tdmi.export.metadata import load_onnx_checked, read_metadata
from tdmi.export.ort_ops import make_session
from tdmi.export.precision import default_recipe, quantize_int8
from tdmi.utils import write_text_atomic

RECIPES = {
    "default (percentile, head+rdm FP32, per-channel)": default_recipe("onnxruntime", "percentile"),
    "entropy, head FP32, per-channel": Int8Recipe(calibration="entropy", fp32_regions=("head",)),
    "entropy, head FP32, per-tensor": Int8Recipe(
        calibration="entropy", fp32_regions=("head",), per_channel=False
    ),
    "percentile, head FP32, per-tensor": Int8Recipe(
        calibration="percentile", fp32_regions=("head",), per_channel=False
    ),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fp32", type=Path)
    p.add_argument("--clips", type=int, default=96)
    p.add_argument("--calib-clips", type=int, default=16)
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--graph", type=Path, action="append", default=[],
        help="an already built graph to split the same way (e.g. the TensorRT-targeted INT8 graph)",
    )
    p.add_argument("--skip-recipes", action="store_true", help="only FP32 and the --graph files")
    args = p.parse_args()
    model = load_onnx_checked(args.fp32)
    config = read_metadata(model)["config"]
    data = synthetic_set(config, args.clips)
    calib = load_calibration(config, None, args.calib_clips)

    def scores(path: Path | None) -> tuple[np.ndarray, np.ndarray]:
        sess = make_session(model if path is None else onnx.load(str(path)))
        name = sess.get_inputs()[0].name
        peaks: list[float] = []

        def run(clips: np.ndarray) -> np.ndarray:
            out = sess.run(None, {name: clips})[0]
            peaks.extend(np.nanmax(out.reshape(out.shape[0], -1), axis=1).tolist())
            return out

        kp, _, _ = predict_keypoints(run, data)
        return pck_hits(kp, data.keypoints, data.visible, data.boxes), np.asarray(peaks)

    rows = {"fp32": scores(None)}
    fail = failed_clip_mask(per_clip_pck(rows["fp32"][0], data.visible), data.visible)
    for graph in args.graph:
        rows[graph.name] = scores(graph)
    with tempfile.TemporaryDirectory() as tmp:
        for label, recipe in ({} if args.skip_recipes else RECIPES).items():
            out = Path(tmp, "q.onnx")
            quantize_int8(args.fp32, out, calib, target="onnxruntime", recipe=recipe, progress=False)
            rows[label] = scores(out)
    report = {"clips": data.size, "fp32_failed_clips": int(fail.sum()), "rows": {}}
    print(f"{data.size} clips; FP32 fails (PCK@0.05 < 0.5) on {int(fail.sum())}")
    print("recipe | PCK all | PCK, FP32-good clips | PCK, FP32-failed clips | peak max good | failed")
    for label, (hits, peak) in rows.items():

        def w(mask: np.ndarray, hits: np.ndarray = hits) -> float | None:
            """PCK % over the visible joints of a group of clips (None for an empty group)."""
            if not mask.any():
                return None
            return float(100 * hits[mask].sum() / max(data.visible[mask].sum(), 1))

        def top(mask: np.ndarray, peak: np.ndarray = peak) -> float | None:
            return float(peak[mask].max()) if mask.any() else None

        r = {
            "pck_all": w(np.ones_like(fail)),
            "pck_fp32_good": w(~fail),
            "pck_fp32_failed": w(fail),
            "peak_max_good": top(~fail),
            "peak_max_failed": top(fail),
            "per_clip_pck": per_clip_pck(hits, data.visible).round(4).tolist(),
        }
        report["rows"][label] = r
        keys = ("pck_all", "pck_fp32_good", "pck_fp32_failed", "peak_max_good", "peak_max_failed")
        cells = [r[k] for k in keys]
        print(" | ".join([label, *("—" if c is None else f"{c:.2f}" for c in cells)]))
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
