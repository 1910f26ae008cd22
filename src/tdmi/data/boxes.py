"""The one check of person boxes before a clip is cut from them (``tdmi-infer`` and ``tdmi_pre``).

A box is x, y, w, h in pixels of the frame it is cut from. It must be finite, have a positive width
and height, be at most ``MAX_BOX_SCALE`` times the frame's longer side (larger boxes make crop
scales that overflow float32 into NaN keypoints, and no real person box is that large) and overlap
the frame. Torch-free (numpy only), so serving and video share it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tdmi.errors import DataError

MAX_BOX_SCALE = 16.0  # a box side may be at most this many times the frame's longer side


def check_boxes(
    boxes: np.ndarray,
    frame_hw: tuple[int, int],
    *,
    max_boxes: int | None = None,
    where: Sequence[str] | None = None,
) -> None:
    """Refuse boxes a clip cannot be cut from, naming the first bad one.

    ``boxes`` [N, 4] x, y, w, h; ``frame_hw`` (H, W) of the frame; ``max_boxes`` a cap on N;
    ``where[i]`` names box i in the message (``file.csv:12``), else ``box i``.
    """
    b = np.asarray(boxes)
    if b.ndim != 2 or b.shape[1] != 4:
        raise DataError(f"boxes must be [N, 4] (x, y, w, h in key-frame pixels), got shape {list(b.shape)}")
    n = b.shape[0]
    if n == 0:
        raise DataError("boxes is empty: send at least one person box [x, y, w, h]")
    if max_boxes is not None and n > max_boxes:
        raise DataError(f"{n} boxes in one request, at most {max_boxes} (the heatmap model's max_batch_size)")
    b = b.astype(np.float64, copy=False)
    h, w = frame_hw
    limit = MAX_BOX_SCALE * max(h, w)

    def label(i: int) -> str:
        return f"{where[i]}: box" if where is not None else f"box {i}"

    def first(bad: np.ndarray) -> int:
        return int(np.flatnonzero(bad)[0])

    def others(bad: np.ndarray) -> str:
        return f" (bad box index {np.flatnonzero(bad)[:8].tolist()})" if where is None else ""

    finite = np.isfinite(b).all(axis=1)
    if not finite.all():
        i = first(~finite)
        raise DataError(f"{label(i)} {b[i].tolist()} contains NaN or Inf{others(~finite)}")
    x, y, bw, bh = b.T
    size_ok = (bw > 0) & (bh > 0)
    if not size_ok.all():
        i = first(~size_ok)
        raise DataError(f"{label(i)} {b[i].tolist()} needs positive width and height{others(~size_ok)}")
    sane = (bw <= limit) & (bh <= limit)
    if not sane.all():
        i = first(~sane)
        raise DataError(
            f"{label(i)} {b[i].tolist()} is more than {MAX_BOX_SCALE:g}x the {w}x{h} frame "
            "(boxes are x, y, w, h in pixels of this frame)"
        )
    inside = (x < w) & (y < h) & (x + bw > 0) & (y + bh > 0)
    if not inside.all():
        i = first(~inside)
        raise DataError(
            f"{label(i)} {b[i].tolist()} lies outside the {w}x{h} frame (x, y, w, h in pixels of this frame)"
        )
