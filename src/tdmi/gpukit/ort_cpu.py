"""Section 6, ONNX Runtime on this machine's CPU (FP32, batch 1), beside PyTorch eager on the same CPU."""

from __future__ import annotations

import time
from typing import Any

from tdmi.gpukit.measure import latency_summary
from tdmi.gpukit.options import TOY_PRESET, W48_PRESET, Options
from tdmi.gpukit.record import Recorder


def section_ort_cpu(opts: Options, rec: Recorder) -> None:
    import importlib.util

    import numpy as np
    import torch

    from tdmi.export.onnx_export import build_onnx, compare_heatmaps
    from tdmi.export.ort_ops import make_session
    from tdmi.model import TDMI, get_preset
    from tdmi.plugins.availability import require_onnxruntime

    ort = require_onnxruntime()
    cfg = get_preset(TOY_PRESET if opts.quick else W48_PRESET)
    warmup, iters = (0, 2) if opts.quick else (2, 10)
    simplify = importlib.util.find_spec("onnxslim") is not None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        model = TDMI(cfg).eval()
    clip = np.random.default_rng(opts.seed).standard_normal((1, cfg.num_frames, 3, *cfg.input_size))
    clip = clip.astype(np.float32)
    rec.set(
        "setup",
        {
            "config": cfg.name,
            "weights": f"random (seed {opts.seed})",
            "onnxruntime": ort.__version__,
            "simplified": simplify,
            "simplify_note": "" if simplify else "onnxslim absent: the graph is not simplified",
            "torch_threads": torch.get_num_threads(),
            "timing": "ORT (worker spinning off) and PyTorch eager FP32 calls interleaved, same input",
        },
    )
    t0 = time.perf_counter()
    proto = build_onnx(model, cfg, batch=1, simplify=simplify, example=clip)
    rec.set("export_s", round(time.perf_counter() - t0, 2))
    t0 = time.perf_counter()
    session = make_session(proto, allow_spinning=False)
    rec.set("session_s", round(time.perf_counter() - t0, 2))
    rec.set("ort_threads", session.get_session_options().intra_op_num_threads or "default")
    name = session.get_inputs()[0].name
    x = torch.from_numpy(clip)

    def run_ort() -> Any:
        return session.run(None, {name: clip})[0]

    def run_torch() -> Any:
        with torch.inference_mode():
            return model(x)

    for _ in range(warmup):
        run_ort()
        run_torch()
    times: dict[str, list[float]] = {"onnxruntime": [], "torch": []}
    deadline_ok = True
    for _ in range(iters):
        for key, fn in (("onnxruntime", run_ort), ("torch", run_torch)):
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
        if rec.time_left() < 0:
            deadline_ok = False
            break
    rows = {k: latency_summary(v) for k, v in times.items()}
    err = compare_heatmaps(run_torch().numpy(), run_ort())
    rows["onnxruntime"].update(
        heatmap_max_abs=err.max_abs, keypoint_agreement=err.keypoint_agreement, finite=err.finite
    )
    rec.set("rows", [{"backend": k, "batch": 1, "status": "ok", **v} for k, v in rows.items()])
    rec.set("ort_speedup_vs_torch", rows["torch"]["p50_ms"] / rows["onnxruntime"]["p50_ms"])
    if not deadline_ok:
        rec.degrade("fewer timed rounds than asked (time guard)")
