"""Training targets: the Gaussian heatmaps a keypoint is encoded as (canonical HRNet
``generate_target``, optionally DARK's unbiased sub-pixel form).

Kept apart from :mod:`tdmi.data.transforms` (cropping and decoding, which every deployed predictor
runs): only training and the accuracy tests draw targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tdmi.data.transforms import _as_pairs, _as_size
from tdmi.errors import DataError

__all__ = ["gaussian_heatmap", "render_gaussian"]


def render_gaussian(
    center_xy: Sequence[float], heatmap_size: Sequence[int], sigma: float = 2.0
) -> np.ndarray:
    """Unnormalised Gaussian (peak 1 at the exact sub-pixel ``center_xy``) on an (h, w) grid."""
    h, w = _as_size(heatmap_size, "heatmap_size (h, w)")
    if not sigma > 0:
        raise DataError(f"sigma must be positive, got {sigma}")
    cx, cy = (float(v) for v in center_xy)
    xs = np.arange(w, dtype=np.float32) - np.float32(cx)
    ys = np.arange(h, dtype=np.float32) - np.float32(cy)
    k = np.float32(-0.5 / (sigma * sigma))
    return np.exp(ys[:, None] ** 2 * k) * np.exp(xs[None, :] ** 2 * k)


def gaussian_heatmap(
    joints_xy: np.ndarray,
    visibility: np.ndarray,
    heatmap_size: Sequence[int],
    sigma: float = 2.0,
    unbiased: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Target [J, h, w] and weights [J] from joints in heatmap coordinates (canonical ``generate_target``).

    The canonical target rounds the centre to a pixel and cuts the Gaussian at 3 sigma; joints whose
    window falls outside the map get weight 0. ``unbiased=True`` keeps the sub-pixel centre (DARK's
    unbiased encoding) with the same window and weights.
    """
    joints = _as_pairs(joints_xy, "joints_xy")
    num_joints = joints.shape[0]
    vis = np.asarray(visibility, dtype=np.float32).reshape(-1)
    if vis.shape != (num_joints,):
        raise DataError(f"visibility must have {num_joints} entries (one per joint), got {vis.shape}")
    h, w = _as_size(heatmap_size, "heatmap_size (h, w)")
    if not sigma > 0:
        raise DataError(f"sigma must be positive, got {sigma}")
    target = np.zeros((num_joints, h, w), dtype=np.float32)
    weight = (vis > 0).astype(np.float32)
    tmp_size = sigma * 3
    for j in range(num_joints):
        mu_x = int(joints[j, 0] + 0.5)
        mu_y = int(joints[j, 1] + 0.5)
        ul = (int(mu_x - tmp_size), int(mu_y - tmp_size))
        br = (int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1))
        if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
            weight[j] = 0.0
            continue
        if weight[j] <= 0.5:
            continue
        x0, x1 = max(0, ul[0]), min(br[0], w)
        y0, y1 = max(0, ul[1]), min(br[1], h)
        if unbiased:
            cx, cy = joints[j, 0], joints[j, 1]
        else:
            cx, cy = float(mu_x), float(mu_y)
        xs = np.arange(x0, x1, dtype=np.float32) - np.float32(cx)
        ys = np.arange(y0, y1, dtype=np.float32) - np.float32(cy)
        g = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / np.float32(2 * sigma * sigma))
        target[j, y0:y1, x0:x1] = g
    return target, weight
