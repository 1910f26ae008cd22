"""Every agreement, error and task-accuracy number the toolkit reports, in one place.

Two families:

* **agreement with a reference** (FP32 vs FP16/INT8, fused vs unfused): heatmap error, decoded
  keypoint agreement within a pixel tolerance, tie-aware argmax agreement. They say whether two
  backends compute the same thing, not whether either is right.
* **task accuracy against ground truth** (known joints): PCK at a fraction of the box size and
  OKS-based AP, with a bootstrap confidence interval over clips and a *paired* one for the drop of a
  variant against its reference (both scored on the same clips).

``tdmi.eval.poseval`` (PoseTrack mAP, poseval-exact) is the third, dataset-level family.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tdmi.data.transforms import Refine, heatmaps_to_keypoints
from tdmi.errors import DataError

AGREEMENT_TOL_PX = 0.1
TIE_RTOL = 1e-4  # reference peaks closer than this (x peak magnitude) are the same peak
PCK_THRESHOLD = 0.05  # of the person box's longer side
OKS_THRESHOLDS = np.round(np.arange(0.50, 0.951, 0.05), 2)  # COCO's AP@[.50:.05:.95]
# Per-joint OKS sigmas in PoseTrack joint order: COCO's values, with COCO's eye sigmas standing in
# for PoseTrack's head_bottom/head_top (COCO has no such joints).
OKS_SIGMAS = np.array(
    [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
     0.087, 0.087, 0.089, 0.089]
)  # fmt: skip


# --------------------------------------------------------------------------- agreement with a reference


def nonfinite_count(heatmaps: np.ndarray) -> int:
    return int(np.size(heatmaps) - np.count_nonzero(np.isfinite(heatmaps)))


def heatmap_error(reference: np.ndarray, output: np.ndarray) -> tuple[float, float]:
    """(max abs, max rel) error of ``output`` against ``reference``.

    "rel" is relative to the reference's peak magnitude (max |ref|), not per element: heatmaps are
    mostly near zero, where a per-element ratio is noise. NaN/Inf anywhere gives NaN/Inf here.
    """
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(output, dtype=np.float64)
    if ref.shape != out.shape:
        raise DataError(f"heatmap shapes differ: reference {ref.shape}, output {out.shape}")
    diff = np.abs(out - ref)
    if not np.isfinite(diff).all():
        bad = diff[~np.isfinite(diff)]
        worst = float("nan") if np.isnan(bad).any() else float("inf")
        return worst, worst
    max_abs = float(diff.max()) if diff.size else 0.0
    peak = float(np.abs(ref).max()) if ref.size else 0.0
    max_rel = max_abs / peak if peak > 0 else (0.0 if max_abs == 0 else float("inf"))
    return max_abs, max_rel


def heatmap_coords(heatmaps: np.ndarray, refine: Refine = "quarter") -> np.ndarray:
    """Argmax + refined keypoint positions [N, J, 2] in heatmap pixels.

    Uses the toolkit's decoder with the identity crop (centre (w/2, h/2), scale (w, h)/200), so the
    result is exactly what ``heatmaps_to_keypoints`` would decode, before the map to image pixels.
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    if hm.ndim != 4:
        raise DataError(f"heatmaps must be [N, J, h, w], got shape {hm.shape}")
    n, _, h, w = hm.shape
    # NaN would make the argmax meaningless; -inf keeps it at a finite joint when there is one.
    hm = np.where(np.isfinite(hm), hm, -np.inf).astype(np.float32)
    centers = np.tile(np.array([[w / 2.0, h / 2.0]], dtype=np.float32), (n, 1))
    scales = np.tile(np.array([[w / 200.0, h / 200.0]], dtype=np.float32), (n, 1))
    coords, _ = heatmaps_to_keypoints(hm, centers, scales, refine=refine)
    return coords.astype(np.float64)


def coords_agreement(
    reference: np.ndarray, coords: np.ndarray, tol: float = AGREEMENT_TOL_PX
) -> tuple[float, float]:
    """(fraction of joints within ``tol`` pixels of the reference's, max deviation in pixels)."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(coords, dtype=np.float64)
    if ref.shape != out.shape or ref.shape[-1] != 2:
        raise DataError(f"keypoint shapes differ or are not [..., 2]: {ref.shape} vs {out.shape}")
    dist = np.linalg.norm(out - ref, axis=-1)
    if dist.size == 0:
        raise DataError("no keypoints to compare")
    finite = np.isfinite(dist)
    # A joint exactly ``tol`` away counts as agreeing even when float rounding puts it a hair beyond.
    agree = float(np.count_nonzero(finite & (dist <= tol + 1e-9)) / dist.size)
    max_dev = float(dist.max()) if finite.all() else float("inf")
    return agree, max_dev


def keypoint_agreement(
    reference: np.ndarray, output: np.ndarray, tol: float = AGREEMENT_TOL_PX
) -> tuple[float, float]:
    """Agreement of decoded keypoints between two heatmap batches (see :func:`coords_agreement`).

    A joint of a heatmap with NaN/Inf counts as disagreeing and makes the max deviation infinite.
    """
    ref = np.asarray(reference)
    out = np.asarray(output)
    if ref.shape != out.shape:
        raise DataError(f"heatmap shapes differ: reference {ref.shape}, output {out.shape}")
    coords = heatmap_coords(out)
    bad = ~np.isfinite(out).all(axis=(2, 3))  # [N, J]
    coords[bad] = np.nan
    return coords_agreement(heatmap_coords(ref), coords, tol)


@dataclass
class HeatmapError:
    """How far one set of heatmaps is from a reference set (the export-time verification record)."""

    max_abs: float
    max_rel: float  # max_abs / max |reference|: relative to the heatmap scale, not per element
    mean_abs: float
    keypoint_agreement: float  # tie-aware: a flipped argmax between equal reference peaks still agrees
    keypoint_agreement_exact: float
    max_keypoint_dist: float  # heatmap pixels
    num_clips: int
    finite: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}, keypoint agreement "
            f"{100 * self.keypoint_agreement:.1f}% (exact {100 * self.keypoint_agreement_exact:.1f}%, "
            f"max dist {self.max_keypoint_dist:.1f} px) over {self.num_clips} clip(s)"
        )


def compare_heatmaps(reference: np.ndarray, test: np.ndarray, tie_rtol: float = TIE_RTOL) -> HeatmapError:
    """Errors of ``test`` against ``reference`` heatmaps [N, J, h, w], integer argmax level.

    Keypoint agreement is tie-aware: the test's peak agrees when, in the reference, its value is
    within ``tie_rtol`` x the reference's largest magnitude of the true peak (two equal peaks are
    both right); ``keypoint_agreement_exact`` compares argmax positions only. NaN in ``test`` counts
    as an infinite error (``finite`` is then False).
    """
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(test, dtype=np.float64)
    if ref.shape != out.shape:
        raise DataError(f"heatmap shapes differ: reference {ref.shape} vs {out.shape}")
    finite = bool(np.isfinite(out).all())
    max_abs, max_rel = heatmap_error(ref, np.nan_to_num(out, nan=np.inf))
    diff = np.abs(np.nan_to_num(out, nan=np.inf) - ref)
    scale = float(np.abs(ref).max())
    n, j, _, w = ref.shape
    rf, tf = ref.reshape(n, j, -1), np.nan_to_num(out, nan=-np.inf).reshape(n, j, -1)
    ia, ib = rf.argmax(-1), tf.argmax(-1)
    exact = ia == ib
    ref_at_b = np.take_along_axis(rf, ib[..., None], -1)[..., 0]
    ref_max = np.take_along_axis(rf, ia[..., None], -1)[..., 0]
    tie = ref_at_b >= ref_max - tie_rtol * scale
    dist = np.hypot(ia % w - ib % w, ia // w - ib // w)
    return HeatmapError(
        max_abs=max_abs,
        max_rel=max_rel,
        mean_abs=float(diff.mean()),
        keypoint_agreement=float(np.mean(exact | tie)),
        keypoint_agreement_exact=float(np.mean(exact)),
        max_keypoint_dist=float(dist.max()),
        num_clips=n,
        finite=finite,
    )


# ------------------------------------------------------------------------- task accuracy (ground truth)


def _check_task_inputs(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, boxes: np.ndarray) -> None:
    if pred.ndim != 3 or pred.shape[-1] != 2 or pred.shape != gt.shape:
        raise DataError(f"predicted and true keypoints must be [N, J, 2], got {pred.shape} and {gt.shape}")
    if visible.shape != pred.shape[:2]:
        raise DataError(f"visibility must be [N, J] = {pred.shape[:2]}, got {visible.shape}")
    if boxes.shape != (pred.shape[0], 4):
        raise DataError(f"boxes must be [N, 4] (x, y, w, h), got {boxes.shape}")


def pck_hits(
    pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, boxes_xywh: np.ndarray, thr: float = PCK_THRESHOLD
) -> np.ndarray:
    """[N, J] bool: a visible joint within ``thr`` x the box's longer side of the truth (NaN: a miss)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    visible, boxes = np.asarray(visible, bool), np.asarray(boxes_xywh, np.float64)
    _check_task_inputs(pred, gt, visible, boxes)
    size = np.maximum(boxes[:, 2], boxes[:, 3])[:, None]
    dist = np.linalg.norm(pred - gt, axis=-1)
    with np.errstate(invalid="ignore"):
        return visible & np.isfinite(dist) & (dist <= thr * size)


def oks(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, boxes_xywh: np.ndarray) -> np.ndarray:
    """Object keypoint similarity per instance [N] (COCO's formula; box area as the object scale)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    visible, boxes = np.asarray(visible, bool), np.asarray(boxes_xywh, np.float64)
    _check_task_inputs(pred, gt, visible, boxes)
    j = pred.shape[1]
    if j != len(OKS_SIGMAS):
        raise DataError(f"OKS needs the {len(OKS_SIGMAS)} PoseTrack joints, got {j}")
    area = np.maximum(boxes[:, 2] * boxes[:, 3], 1e-9)[:, None]
    d2 = np.sum((pred - gt) ** 2, axis=-1)
    var = (2 * OKS_SIGMAS[None, :]) ** 2
    e = np.exp(-np.where(np.isfinite(d2), d2, np.inf) / (2 * area * var))
    n_vis = visible.sum(axis=1)
    return np.where(n_vis > 0, (e * visible).sum(axis=1) / np.maximum(n_vis, 1), 0.0)


def oks_ap(similarity: np.ndarray, scores: np.ndarray, thresholds: np.ndarray = OKS_THRESHOLDS) -> float:
    """COCO-style AP over OKS thresholds: one prediction per true instance, ranked by ``scores``.

    Every instance has exactly one prediction (the crop-based top-down setting), so a prediction is
    a true positive at threshold t when its OKS >= t; precision is interpolated at 101 recall points
    as in pycocotools.
    """
    sim = np.asarray(similarity, np.float64)
    sc = np.asarray(scores, np.float64)
    if sim.shape != sc.shape or sim.ndim != 1 or sim.size == 0:
        raise DataError(f"OKS and scores must be equal-length non-empty vectors, got {sim.shape}, {sc.shape}")
    order = np.argsort(-np.nan_to_num(sc, nan=-np.inf), kind="mergesort")
    sim = sim[order]
    recall_pts = np.linspace(0.0, 1.0, 101)
    aps = []
    for t in thresholds:
        tp = np.cumsum(sim >= t)
        fp = np.cumsum(sim < t)
        recall = tp / sim.size
        precision = tp / np.maximum(tp + fp, 1)
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
        idx = np.searchsorted(recall, recall_pts, side="left")
        aps.append(float(np.mean([precision[i] if i < precision.size else 0.0 for i in idx])))
    return float(np.mean(aps))


FAILED_CLIP_PCK = 0.5  # a clip scoring below this PCK counts as a failure


def per_clip_pck(hits: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """[N] fraction of each clip's visible joints that hit (0 for a clip with none visible)."""
    n_vis = np.asarray(visible, bool).sum(axis=1)
    return np.asarray(hits).sum(axis=1) / np.maximum(n_vis, 1)


def failed_clip_mask(per_clip: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """[N] bool: clips with visible joints that score below ``FAILED_CLIP_PCK``."""
    return (np.asarray(visible, bool).sum(axis=1) > 0) & (per_clip < FAILED_CLIP_PCK)


@dataclass
class TaskScore:
    """One backend's task accuracy on a clip set (fractions; PCK x 100 is "points")."""

    pck: float
    pck_ci: tuple[float, float]
    oks_ap: float
    clips: int
    joints: int
    failed_clips: int  # clips scoring below 0.5 PCK: the failure mode an average hides
    drop_pck: float | None = None  # reference minus this, in PCK points (x 100)
    drop_pck_ci: tuple[float, float] | None = None  # paired bootstrap over clips, points
    drop_oks_ap: float | None = None  # points

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bootstrap_ci(
    per_clip: np.ndarray, weights: np.ndarray, rng: np.random.Generator, n: int
) -> tuple[float, float]:
    """95 % percentile interval of a joint-weighted mean, resampling whole clips."""
    idx = rng.integers(0, per_clip.size, size=(n, per_clip.size))
    w = weights[idx]
    means = (per_clip[idx] * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def task_scores(
    preds: dict[str, tuple[np.ndarray, np.ndarray]],
    gt: np.ndarray,
    visible: np.ndarray,
    boxes_xywh: np.ndarray,
    reference: str | None = None,
    thr: float = PCK_THRESHOLD,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, TaskScore]:
    """PCK@``thr``, OKS AP and failures for every backend's (keypoints [N, J, 2], scores [N, J]).

    With ``reference`` the drop of every backend against it is added, with a paired bootstrap
    interval (the same resampled clips for both), which is far tighter than two separate intervals.
    """
    if reference is not None and reference not in preds:
        raise DataError(f"the reference {reference!r} has no predictions")
    vis = np.asarray(visible, bool)
    n_vis = vis.sum(axis=1).astype(np.float64)
    hits = {k: pck_hits(kp, gt, vis, boxes_xywh, thr) for k, (kp, _) in preds.items()}
    per_clip = {k: per_clip_pck(h, vis) for k, h in hits.items()}
    out: dict[str, TaskScore] = {}
    for k, (kp, sc) in preds.items():
        rng = np.random.default_rng(seed)
        inst_score = np.nanmean(np.where(vis, np.asarray(sc, np.float64), np.nan), axis=1)
        out[k] = TaskScore(
            pck=float(hits[k].sum() / max(vis.sum(), 1)),
            pck_ci=_bootstrap_ci(per_clip[k], n_vis, rng, bootstrap),
            oks_ap=oks_ap(oks(kp, gt, vis, boxes_xywh), inst_score),
            clips=int(kp.shape[0]),
            joints=int(vis.sum()),
            failed_clips=int(np.count_nonzero(failed_clip_mask(per_clip[k], vis))),
        )
    if reference is not None:
        ref = out[reference]
        for k, score in out.items():
            score.drop_pck = 100.0 * (ref.pck - score.pck)
            score.drop_oks_ap = 100.0 * (ref.oks_ap - score.oks_ap)
            diff = per_clip[reference] - per_clip[k]
            lo, hi = _bootstrap_ci(diff, n_vis, np.random.default_rng(seed), bootstrap)
            score.drop_pck_ci = (100.0 * lo, 100.0 * hi)
    return out
