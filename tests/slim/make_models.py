"""Make the artifacts the deploy-only tests load, with the full install (torch, onnx).

``python tests/slim/make_models.py OUT VIDEO`` writes into OUT:

* ``tiny.onnx``: tdmi-tiny, seeded random weights, dynamic batch (``tdmi-export onnx``'s code);
* ``tiny.backbone.onnx`` / ``tiny.head.onnx``: the split pair of the same weights;
* ``full/``: what ``tdmi-infer VIDEO --model tiny.onnx --full-frame`` writes in the full install;
* ``full_keypoints.npz``: its unrounded keypoints, to compare the deploy-only install with (1e-4 px).

CI runs it in the full venv and hands OUT to the deploy-only venv (``TDMI_SLIM_MODELS``); the
tests call :func:`make` themselves when they run in a full install without that variable.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# CI's deploy-only run: every check of the group must run (a skip fails).
REQUIRED = os.environ.get("TDMI_SLIM_REQUIRED") == "1"


def full_install() -> bool:
    """torch and onnx are installed here (checked without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "onnx"))


def infer_keypoints(video: Path, model: Path, out: Path) -> np.ndarray:
    """``tdmi-infer VIDEO --model MODEL --full-frame -o OUT`` through the library: [P, J, 2] keypoints."""
    from tdmi import runtime
    from tdmi.video.infer import infer_video

    with runtime.load(model, device="cpu") as predictor:
        result = infer_video(video, out, predictor, full_frame=True, overlay=False).result
    return np.stack([p.keypoints for p in result.poses]).astype(np.float64)


def make(out: Path, video: Path) -> Path:
    import torch

    from tdmi.export import export_onnx
    from tdmi.export.split_export import export_split_onnx
    from tdmi.model import TDMI
    from tdmi.utils import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = TDMI.from_preset("tdmi-tiny").eval()
    export_onnx(net.config, out / "tiny.onnx", model=net, batch="dynamic", verify=False, progress=False)
    export_split_onnx(net.config, out / "tiny.onnx", model=net, verify=False, simplify=False, progress=False)
    keypoints = infer_keypoints(video, out / "tiny.onnx", out / "full")
    with atomic_path(out / "full_keypoints.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, keypoints=keypoints)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/slim/make_models.py OUT VIDEO")
    print(make(Path(sys.argv[1]), Path(sys.argv[2])))
