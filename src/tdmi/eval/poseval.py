"""Multi-person keypoint AP exactly as the official PoseTrack evaluator (poseval) computes it.

The steps and their order follow poseval's ``load_data_dir`` -> ``cleanupData`` ->
``removeIgnoredPoints`` -> ``assignGTmulti`` -> ``computeMetrics`` (``computeRPC`` + ``VOCap``),
including its quirks, because published PoseTrack numbers are only comparable when every one
of them is reproduced:

- frames whose ground truth lists no person are dropped together with their predictions;
- in frames with ignore regions, GT and predicted points strictly inside a polygon are removed,
  and a person left without points is removed (a GT person removed this way turns a
  prediction on it into a false positive);
- a GT person's head size is 0.6 x its head-box diagonal; a predicted joint is correct when its
  distance to the GT joint is at most 0.5 x head size;
- each prediction is first tied to its best GT person by the fraction of that person's
  labelled joints it gets right (first one on ties), then each GT person keeps the best of the
  predictions tied to it; every joint of an unkept prediction is a false positive;
- per joint, all predicted joints of all frames are sorted by score (numpy's default argsort,
  reversed) and AP is the all-point VOC area; a joint without any prediction gets AP 0 and a
  joint without any GT gets NaN; Total is the mean of the non-NaN per-joint APs;
- ground truth without any labelled joint gives NaN everywhere (poseval would print 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from tdmi.data.annotations import POSEVAL_JOINTS, POSEVAL_TO_POSETRACK, Frame, Person, poseval_head_size
from tdmi.errors import DataError

DIST_THRESH = 0.5
MIN_SCORE = -9999.0  # poseval's score for a predicted joint without one
NUM_EVAL_JOINTS = len(POSEVAL_JOINTS)

# Printed groups (poseval's getCum), as poseval joint ids.
GROUPS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("Head", (14, 12, 13)),  # head_top, neck (head_bottom), nose
    ("Shou", (8, 9)),
    ("Elb", (7, 10)),
    ("Wri", (6, 11)),
    ("Hip", (2, 3)),
    ("Knee", (1, 4)),
    ("Ankl", (0, 5)),
)
_IDX = np.asarray(POSEVAL_TO_POSETRACK)


@dataclass
class _Pose:
    """One person reduced to what poseval looks at: 15 joints in poseval order."""

    xy: np.ndarray  # [15, 2]
    has: np.ndarray  # [15] bool
    score: np.ndarray  # [15] float64
    head_size: float | None


def _pose(p: Person, with_scores: bool) -> _Pose:
    xy = p.keypoints[_IDX, :2].astype(np.float64)
    has = p.labeled[_IDX].copy()
    score = np.full(NUM_EVAL_JOINTS, MIN_SCORE)
    if with_scores and p.keypoint_scores is not None:
        s = p.keypoint_scores[_IDX]
        score = np.where(np.isnan(s), MIN_SCORE, s)
    head = poseval_head_size(p.head_box_xywh) if p.head_box_xywh is not None else None
    return _Pose(xy=xy, has=has, score=score, head_size=head)


def _orientation(
    x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray, qx: np.ndarray, qy: np.ndarray
) -> np.ndarray:
    """Sign of the turn p1 -> p2 -> q (GEOS ``Orientation::index``), exact where floats cannot tell."""
    dx1, dy1, dx2, dy2 = x2 - x1, y2 - y1, qx - x2, qy - y2
    det = dx1 * dy2 - dy1 * dx2
    bound = 1e-12 * (np.abs(dx1 * dy2) + np.abs(dy1 * dx2))
    sign = np.sign(det).astype(np.int64)
    for idx in np.argwhere(np.abs(det) <= bound):
        t = tuple(idx)
        a, b = Fraction(float(x1[t])), Fraction(float(y1[t]))
        c, d = Fraction(float(x2[t])), Fraction(float(y2[t]))
        e, f = Fraction(float(qx[t])), Fraction(float(qy[t]))
        exact = (c - a) * (f - d) - (d - b) * (e - c)
        sign[t] = (exact > 0) - (exact < 0)
    return sign


# Work arrays are at most this many elements (points x polygon vertices, predictions x GT people
# x joints): memory stays bounded however many predictions one frame has.
CHUNK_ELEMENTS = 1 << 18


def _chunks(n: int, per_item: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(1, per_item))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _inside(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Shapely's ``Polygon.contains(Point)`` for [M, 2] points: strictly inside, boundary excluded.

    GEOS's ``RayCrossingCounter`` (what shapely runs), segment by segment, vectorised over chunks
    of points (each point's answer depends on it alone, so chunking changes nothing).
    """
    out = np.zeros(len(pts), dtype=bool)
    for part in _chunks(len(pts), len(poly)):
        out[part] = _inside_chunk(poly, pts[part])
    return out


def _inside_chunk(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    shape = (len(pts), len(poly))
    px = np.broadcast_to(pts[:, 0:1], shape)
    py = np.broadcast_to(pts[:, 1:2], shape)
    q = np.concatenate([poly[1:], poly[:1]])
    x1 = np.broadcast_to(poly[:, 0][None, :], shape)
    y1 = np.broadcast_to(poly[:, 1][None, :], shape)
    x2 = np.broadcast_to(q[:, 0][None, :], shape)
    y2 = np.broadcast_to(q[:, 1][None, :], shape)
    considered = ~((x1 < px) & (x2 < px))  # segments wholly left of the point are skipped
    at_end = (px == x2) & (py == y2)
    horizontal = (y1 == py) & (y2 == py)
    on_horizontal = horizontal & (px >= np.minimum(x1, x2)) & (px <= np.maximum(x1, x2))
    straddle = ((y1 > py) & (y2 <= py)) | ((y2 > py) & (y1 <= py))
    orient = np.zeros(shape, dtype=np.int64)
    sel = considered & ~at_end & ~horizontal & straddle
    if sel.any():
        orient[sel] = _orientation(x1[sel], y1[sel], x2[sel], y2[sel], px[sel], py[sel])
    orient = np.where(y2 < y1, -orient, orient)
    on_boundary = (considered & (at_end | (~at_end & on_horizontal) | (sel & (orient == 0)))).any(axis=1)
    crossings = (sel & (orient > 0)).sum(axis=1)
    return (crossings % 2 == 1) & ~on_boundary


def _usable_polygons(regions: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Polygons with an area; poseval (shapely) cannot build one from fewer than 3 vertices."""
    out = []
    for r in regions:
        pts = np.asarray(r, dtype=np.float64).reshape(-1, 2)
        if len(pts) >= 2 and np.array_equal(pts[0], pts[-1]):
            pts = pts[:-1]
        if len(pts) >= 3:
            out.append(pts)
    return out


def _remove_ignored(poses: list[_Pose], polys: list[np.ndarray]) -> list[_Pose]:
    """poseval's ``removeIgnoredPointsRects``: drop points in a region, then people left without any."""
    if poses and polys:
        rows, cols = np.nonzero(np.stack([pose.has for pose in poses]))
        pts = np.stack([pose.xy for pose in poses])[rows, cols].astype(np.float64, copy=False)
        ignored = np.zeros(len(pts), dtype=bool)
        for poly in polys:
            ignored |= _inside(poly, pts)
        for i, j in zip(rows[ignored].tolist(), cols[ignored].tolist(), strict=True):
            poses[i].has[j] = False
    return [pose for pose in poses if pose.has.any()]


@dataclass
class _Accum:
    """Per joint, the scores and true/false labels of predicted joints, in prediction order."""

    scores: list[list[np.ndarray]] = field(default_factory=lambda: [[] for _ in range(NUM_EVAL_JOINTS)])
    labels: list[list[np.ndarray]] = field(default_factory=lambda: [[] for _ in range(NUM_EVAL_JOINTS)])
    n_gt: np.ndarray = field(default_factory=lambda: np.zeros(NUM_EVAL_JOINTS))
    frames: int = 0
    gt_persons: int = 0
    pred_persons: int = 0

    def add(self, poses: Sequence[_Pose], labels: np.ndarray) -> None:
        """``labels`` [len(poses), 15]: whether each predicted joint is a true positive."""
        if not poses:
            return
        has = np.stack([p.has for p in poses])
        score = np.stack([p.score for p in poses]).astype(np.float64, copy=False)
        for j in range(NUM_EVAL_JOINTS):
            sel = has[:, j]
            if sel.any():
                self.scores[j].append(score[sel, j])
                self.labels[j].append(labels[sel, j].astype(np.int8))

    def joint(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.scores[j]:
            return np.zeros(0, np.float64), np.zeros(0, np.int8)
        return np.concatenate(self.scores[j]), np.concatenate(self.labels[j])

    def count(self, j: int) -> int:
        return sum(len(a) for a in self.scores[j])


def _distances(prs: list[_Pose], gts: list[_Pose]) -> np.ndarray:
    """[P, G, 15] normalised distances (inf where either joint is missing), as poseval computes them."""
    for gt in gts:
        if gt.has.any() and gt.head_size is None:
            raise DataError(
                "a ground-truth person with labelled joints has no head box (bbox_head / x1,y1,x2,y2)"
            )
    pr_xy = np.stack([p.xy for p in prs])[:, None]  # [P, 1, 15, 2]
    gt_xy = np.stack([g.xy for g in gts])[None]  # [1, G, 15, 2]
    both = np.stack([p.has for p in prs])[:, None] & np.stack([g.has for g in gts])[None]
    head = np.asarray([np.nan if g.head_size is None else g.head_size for g in gts])[None, :, None]
    d = gt_xy - pr_xy
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        vals = np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]) / head
    dist = np.where(both, vals, np.inf)
    # Near the threshold recompute with poseval's own expression so that the last bit agrees.
    for r, g, j in np.argwhere(both & (np.abs(dist - DIST_THRESH) <= 1e-9)):
        a, b = gts[g].xy[j], prs[r].xy[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            dist[r, g, j] = np.linalg.norm(np.subtract([a[0], a[1]], [b[0], b[1]])) / gts[g].head_size
    return dist


def _match(prs: list[_Pose], gts: list[_Pose]) -> tuple[np.ndarray, np.ndarray]:
    """Which joints hit ([P, G, 15]) and poseval's ``pck`` ([P, G]) for a chunk of predictions."""
    match = _distances(prs, gts) <= DIST_THRESH
    n_gtp = np.stack([g.has for g in gts]).sum(axis=1)
    pck = 1.0 * np.sum(match, axis=2)
    for j in range(len(gts)):
        if n_gtp[j] > 0:
            pck[:, j] = pck[:, j] / n_gtp[j]
    return match, pck


def _assign_frame(gts: list[_Pose], prs: list[_Pose], acc: _Accum) -> None:
    """poseval's ``assignGTmulti`` for one frame, over chunks of predictions.

    poseval ties each prediction to its best GT person (first on ties; a row of ``pck`` keeps only
    that entry), then each GT person keeps the first best prediction tied to it (``argmax`` down the
    column; none when the best is 0). Both steps read one row or a running column maximum, so
    chunks of predictions give exactly poseval's answer in memory bounded by the chunk.
    """
    if prs and gts:
        n_gt = len(gts)
        best_val = np.zeros(n_gt)
        best_row = np.full(n_gt, -1)
        for part in _chunks(len(prs), n_gt * NUM_EVAL_JOINTS):
            _, pck = _match(prs[part], gts)
            rows = np.arange(pck.shape[0])
            idx = np.argmax(pck, axis=1)
            col = np.zeros_like(pck)
            col[rows, idx] = pck[rows, idx]
            top, arg = col.max(axis=0), col.argmax(axis=0)
            better = top > best_val  # strictly: an earlier prediction wins ties, as argmax does
            best_val[better] = top[better]
            best_row[better] = arg[better] + part.start
        winners = {int(r): g for g, r in enumerate(best_row.tolist()) if r >= 0}
        kept = sorted(winners)
        hits = _match([prs[r] for r in kept], gts)[0] if kept else None
        for part in _chunks(len(prs), NUM_EVAL_JOINTS):
            labels = np.zeros((part.stop - part.start, NUM_EVAL_JOINTS), dtype=bool)
            for k, r in enumerate(kept):
                if part.start <= r < part.stop:
                    labels[r - part.start] = hits[k, winners[r]]  # type: ignore[index]  # hits is None only when kept is empty
            acc.add(prs[part], labels)
    elif not gts:  # no GT: every prediction is a false positive
        acc.add(prs, np.zeros((len(prs), NUM_EVAL_JOINTS), dtype=bool))
    for g in gts:
        acc.n_gt += g.has


def compute_rpc(scores: np.ndarray, labels: np.ndarray, total_pos: float) -> tuple[np.ndarray, np.ndarray]:
    """poseval's ``computeRPC``: precision and recall down the score-sorted list."""
    order = np.array(scores).argsort()[::-1]
    tp = np.cumsum(labels[order] == 1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = 1.0 * tp / np.float64(total_pos)
    precision = 1.0 * tp / np.arange(1, len(order) + 1, dtype=np.float64)
    return precision, recall


def voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    """poseval's ``VOCap``: area under the monotone precision envelope, all points."""
    mpre = np.zeros([1, 2 + len(prec)])
    mpre[0, 1 : len(prec) + 1] = prec
    mrec = np.zeros([1, 2 + len(rec)])
    mrec[0, 1 : len(rec) + 1] = rec
    mrec[0, len(rec) + 1] = 1.0
    mpre[0, :-1] = np.maximum.accumulate(mpre[0, ::-1])[::-1][:-1]
    i = (np.argwhere(~np.equal(mrec[0, 1:], mrec[0, : mrec.shape[1] - 1])) + 1).flatten()
    return float(np.sum(np.multiply(np.subtract(mrec[0, i], mrec[0, i - 1]), mpre[0, i])))


@dataclass
class EvalResult:
    """Per-joint AP (poseval joint order and names), the printed groups and what was counted."""

    ap: dict[str, float]
    precision: dict[str, float]
    recall: dict[str, float]
    groups: dict[str, float]
    total: float
    counts: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if v is None or np.isnan(v) else float(v)

        return {
            "metric": "PoseTrack multi-person AP (poseval)",
            "total": clean(self.total),
            "groups": {k: clean(v) for k, v in self.groups.items()},
            "ap": {k: clean(v) for k, v in self.ap.items()},
            "precision": {k: clean(v) for k, v in self.precision.items()},
            "recall": {k: clean(v) for k, v in self.recall.items()},
            "counts": self.counts,
        }


def _finish(acc: _Accum, extra_counts: dict[str, Any] | None = None) -> EvalResult:
    ap_all = np.zeros(NUM_EVAL_JOINTS + 1)
    pre_all = np.zeros(NUM_EVAL_JOINTS + 1)
    rec_all = np.zeros(NUM_EVAL_JOINTS + 1)
    for j in range(NUM_EVAL_JOINTS):
        scores, labels = acc.joint(j)
        if acc.n_gt.sum() == 0:  # no labelled joint anywhere: AP is undefined, not 0
            ap_all[j] = pre_all[j] = rec_all[j] = np.nan
            continue
        precision, recall = compute_rpc(scores, labels, float(acc.n_gt[j]))
        if len(precision) > 0:
            ap_all[j] = voc_ap(recall, precision) * 100
            pre_all[j] = precision[-1] * 100
            rec_all[j] = recall[-1] * 100
    for arr in (ap_all, pre_all, rec_all):
        vals = arr[:NUM_EVAL_JOINTS]
        ok = vals[~np.isnan(vals)]
        arr[NUM_EVAL_JOINTS] = ok.mean() if ok.size else np.nan
    names = POSEVAL_JOINTS
    groups = {name: float(ap_all[list(ids)].mean()) for name, ids in GROUPS}
    groups["Total"] = float(ap_all[NUM_EVAL_JOINTS])
    counts: dict[str, Any] = {
        "frames": acc.frames,
        "gt_persons": acc.gt_persons,
        "pred_persons": acc.pred_persons,
        "gt_joints": {names[j]: int(acc.n_gt[j]) for j in range(NUM_EVAL_JOINTS)},
        "pred_joints": {names[j]: acc.count(j) for j in range(NUM_EVAL_JOINTS)},
    }
    if extra_counts:
        counts.update(extra_counts)
    return EvalResult(
        ap={names[j]: float(ap_all[j]) for j in range(NUM_EVAL_JOINTS)},
        precision={names[j]: float(pre_all[j]) for j in range(NUM_EVAL_JOINTS)},
        recall={names[j]: float(rec_all[j]) for j in range(NUM_EVAL_JOINTS)},
        groups=groups,
        total=float(ap_all[NUM_EVAL_JOINTS]),
        counts=counts,
    )


def evaluate_frames(
    pairs: Iterable[tuple[Frame, Sequence[Person]]], extra_counts: dict[str, Any] | None = None
) -> EvalResult:
    """AP over (ground-truth frame, predicted people of that frame) pairs, in the order given.

    The order matters only for ties in score (as in poseval, which takes its GT files in glob order).
    """
    acc = _Accum()
    for frame, preds in pairs:
        if len(frame.persons) == 0:  # cleanupData: frames without annotated people are skipped
            continue
        gts = [_pose(p, with_scores=False) for p in frame.persons if p.has_points_entry]
        prs = [_pose(p, with_scores=True) for p in preds if p.has_points_entry]
        if frame.ignore_regions:
            polys = _usable_polygons(frame.ignore_regions)
            prs = _remove_ignored(prs, polys)
            gts = _remove_ignored(gts, polys)
        acc.frames += 1
        acc.gt_persons += len(gts)
        acc.pred_persons += len(prs)
        _assign_frame(gts, prs, acc)
    return _finish(acc, extra_counts)


def format_table(result: EvalResult, per_joint: bool = False) -> str:
    """The poseval AP table (Head Shou Elb Wri Hip Knee Ankl Total) as plain text."""

    def cell(v: float) -> str:
        return f"{'nan' if np.isnan(v) else f'{v:.1f}':>6}"

    names = list(result.groups)
    lines = ["Average Precision (AP) metric:", " ".join(f"{n:>6}" for n in names)]
    lines.append(" ".join(cell(result.groups[n]) for n in names))
    if per_joint:
        lines.append("")
        for name, ap in result.ap.items():
            lines.append(f"{name:<15}{cell(ap)}  (GT joints {result.counts['gt_joints'][name]})")
    return "\n".join(lines)
