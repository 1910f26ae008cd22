"""The poseval-exact AP: the real fixture, hand-computed cases and prediction files."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from tdmi.data.annotations import POSEVAL_JOINTS, Frame, Person, poseval_head_size
from tdmi.data.posetrack import load_split
from tdmi.errors import DataError
from tdmi.eval import (
    EvalResult,
    compute_rpc,
    evaluate,
    evaluate_frames,
    format_table,
    voc_ap,
    write_predictions,
)
from tdmi.spec.joints import NUM_JOINTS, POSETRACK_JOINTS

J = {n: i for i, n in enumerate(POSETRACK_JOINTS)}
EVAL15 = [n for n in POSETRACK_JOINTS if n not in ("left_ear", "right_ear")]
HEAD_BOX = np.array([0.0, 0.0, 30.0, 40.0])  # diagonal 50 -> head size 30 -> threshold 15 px


def person(points: dict[str, tuple[float, float]], score: float | dict[str, float] | None = None) -> Person:
    """A person with the given joints labelled; scores for predictions (float = same for all)."""
    kp = np.zeros((NUM_JOINTS, 3))
    labeled = np.zeros(NUM_JOINTS, dtype=bool)
    scores = None if score is None else np.zeros(NUM_JOINTS)
    for name, (x, y) in points.items():
        kp[J[name]] = (x, y, 1.0)
        labeled[J[name]] = True
        if scores is not None:
            scores[J[name]] = score if isinstance(score, float) else score[name]
    return Person(kp, head_box_xywh=HEAD_BOX.copy(), labeled=labeled, keypoint_scores=scores)


def full_pose(x0: float, y0: float) -> dict[str, tuple[float, float]]:
    return {n: (x0 + 7.0 * i, y0 + 11.0 * i) for i, n in enumerate(EVAL15)}


def frame(persons: list[Person], regions: list[np.ndarray] | None = None, image_id: int = 1) -> Frame:
    return Frame(
        image_id, f"images/val/x/{image_id:06d}.jpg", image_id, True, 1920, 1080, persons, regions or []
    )


def perfect_predictions(split, out: Path) -> None:
    for video in split:
        preds = {}
        for f in video.frames:
            ps = []
            for p in f.persons:
                q = copy.deepcopy(p)  # unlabelled joints stay (0, 0, 0): poseval reads them as absent
                q.keypoint_scores = np.ones(NUM_JOINTS)
                ps.append(q)
            preds[f.image_id] = ps
        write_predictions(out, video.name, [f.raw for f in video.frames], preds)


# ----------------------------------------------------------------------------- real fixture


def test_perfect_predictions_score_100_on_fixture(posetrack18: Path, tmp_path: Path) -> None:
    perfect_predictions(load_split(posetrack18), tmp_path)
    result = evaluate(posetrack18 / "annotations/val", tmp_path)
    assert result.total == 100.0
    assert set(result.groups) == {"Head", "Shou", "Elb", "Wri", "Hip", "Knee", "Ankl", "Total"}
    assert all(v == 100.0 for v in result.groups.values())
    assert all(v == 100.0 for v in result.ap.values()) and len(result.ap) == 15
    c = result.counts
    assert (c["videos"], c["frames"], c["gt_persons"], c["pred_persons"]) == (3, 3, 14, 14)
    # README per-joint counts, ears dropped, minus the right knee inside an ignore region (11 -> 10).
    readme = [13, 14, 14, 0, 0, 14, 14, 10, 14, 11, 11, 13, 13, 10, 11, 10, 10]
    expected = dict(zip(POSETRACK_JOINTS, readme, strict=True))
    expected["right_knee"] = 10
    assert c["gt_joints"] == {n: expected[n] for n in POSEVAL_JOINTS}
    assert c["pred_joints"]["right_knee"] == 10  # the prediction on it is dropped as well


def test_ignore_region_drops_fixture_right_knee(posetrack18: Path) -> None:
    f = load_split(posetrack18).video("003418_mpii_test").frames[0]
    gt = f.persons[0]
    assert gt.annotation_id == 1003418000000
    assert gt.keypoints[J["right_knee"], :2].tolist() == [1416.0, 429.0]
    pred = copy.deepcopy(gt)
    pred.keypoint_scores = np.ones(NUM_JOINTS)
    # An extra prediction lying entirely inside the ignore polygon, scored above the real one.
    ghost = person({n: (1416.0, 429.0) for n in EVAL15}, score=2.0)
    res = evaluate_frames([(f, [pred, ghost])])
    assert res.counts["gt_joints"]["right_knee"] == 0
    assert res.counts["pred_persons"] == 1  # the ghost lost all its points and was removed
    labelled = [n for n, k in res.counts["gt_joints"].items() if k]
    assert len(labelled) == 10  # 11 labelled joints minus the ignored knee
    assert all(res.ap[n] == 100.0 and res.precision[n] == 100.0 for n in labelled)
    # poseval: a joint with neither GT nor prediction gets AP 0 (not NaN) and still counts in Total
    assert res.ap["right_knee"] == 0.0 and res.total == pytest.approx(100.0 * 10 / 15)
    # Without the ignore region the right knee is a labelled joint again and the ghost a false positive.
    f.ignore_regions = []
    res = evaluate_frames([(f, [pred, ghost])])
    assert res.counts["gt_joints"]["right_knee"] == 1
    assert res.ap["right_knee"] == 50.0


# ----------------------------------------------------------------------------- hand-computed cases


@pytest.mark.parametrize(
    ("dx", "dy", "matched"),
    [
        (9.0, 12.0, True),  # distance exactly 15 = 0.5 * head size 30: poseval uses <=
        (0.0, 15.0 - 1e-6, True),
        (0.0, 15.0 + 1e-6, False),
        (15.0 + 1e-6, 0.0, False),
    ],
)
def test_threshold_half_head_size(dx: float, dy: float, matched: bool) -> None:
    assert poseval_head_size(HEAD_BOX) == 30.0
    gt_pts = full_pose(100.0, 100.0)
    pred_pts = dict(gt_pts)
    x, y = gt_pts["left_wrist"]
    pred_pts["left_wrist"] = (x + dx, y + dy)
    res = evaluate_frames([(frame([person(gt_pts)]), [person(pred_pts, 1.0)])])
    assert res.ap["left_wrist"] == (100.0 if matched else 0.0)
    assert res.ap["right_wrist"] == 100.0


def test_extra_person_lowers_precision() -> None:
    gt = person(full_pose(100.0, 100.0))
    good = person(full_pose(100.0, 100.0), 0.9)
    far = person(full_pose(1000.0, 100.0), 0.8)
    # extra person scored lower: sorted [TP, FP] -> precision [1, 1/2], recall [1, 1] -> AP 100
    res = evaluate_frames([(frame([gt]), [good, far])])
    assert res.total == 100.0
    assert all(p == 50.0 for p in res.precision.values())
    assert all(r == 100.0 for r in res.recall.values())
    # scored higher: sorted [FP, TP] -> precision [0, 1/2], recall [0, 1] -> AP = 1 * 1/2 = 50
    far_high = person(full_pose(1000.0, 100.0), 0.95)
    res = evaluate_frames([(frame([gt]), [good, far_high])])
    assert res.total == 50.0
    assert all(v == 50.0 for v in res.groups.values())


def test_missing_scores_rank_last() -> None:
    """poseval gives a predicted joint without a score -9999, so it sorts below any scored one."""
    gt = person(full_pose(100.0, 100.0))
    good_no_scores = person(full_pose(100.0, 100.0), None)
    far = person(full_pose(1000.0, 100.0), 0.01)
    res = evaluate_frames([(frame([gt]), [good_no_scores, far])])
    assert res.total == 50.0


def test_hand_computed_ap_one_joint() -> None:
    """Three GT heads; predictions TP .9, FP .8, TP .7, FP .6.

    precision [1, 1/2, 2/3, 1/2], recall [1/3, 1/3, 2/3, 2/3]; the envelope gives
    AP = 1/3 * 1 + 1/3 * 2/3 = 5/9. The 14 other joints have neither GT nor predictions, so
    poseval gives them AP 0 and they count in Total, except the nose: predicted but never
    labelled, so its AP is NaN and Total skips it.
    """
    gts = [person({"head_top": (100.0, 100.0)}), person({"head_top": (500.0, 100.0)}),
           person({"head_top": (900.0, 100.0)})]  # fmt: skip
    preds = [
        person({"head_top": (105.0, 100.0)}, 0.9),
        person({"head_top": (300.0, 500.0), "nose": (300.0, 520.0)}, 0.8),
        person({"head_top": (500.0, 110.0)}, 0.7),
        person({"head_top": (1500.0, 900.0)}, 0.6),
    ]
    res = evaluate_frames([(frame(gts), preds)])
    assert res.ap["head_top"] == pytest.approx(500.0 / 9.0, abs=1e-12)
    assert math.isnan(res.ap["nose"])
    assert res.ap["left_ankle"] == 0.0
    assert res.total == pytest.approx(500.0 / 9.0 / 14.0, abs=1e-12)
    assert math.isnan(res.groups["Head"])  # the group mean includes the NaN nose, as in poseval
    assert res.precision["head_top"] == 50.0 and res.recall["head_top"] == pytest.approx(200.0 / 3.0)


def test_compute_rpc_and_voc_ap_directly() -> None:
    prec, rec = compute_rpc(np.array([0.6, 0.9, 0.7, 0.8]), np.array([0, 1, 1, 0], dtype=np.int8), 3.0)
    np.testing.assert_allclose(prec, [1.0, 0.5, 2.0 / 3.0, 0.5])
    np.testing.assert_allclose(rec, [1.0 / 3.0, 1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0])
    assert voc_ap(rec, prec) == pytest.approx(5.0 / 9.0)
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == 1.0


def test_greedy_assignment_takes_first_best() -> None:
    """Two predictions both best on GT A: A keeps the better one; the other is a false positive even
    though it would have matched GT B (poseval does not reassign it)."""
    a_pts = full_pose(100.0, 100.0)
    b_pts = {n: (x + 20.0, y) for n, (x, y) in a_pts.items()}  # B shifted by 20 px
    gts = [person(a_pts), person(b_pts)]
    exact_a = person(a_pts, 0.5)
    between = person({n: (x + 8.0, y) for n, (x, y) in a_pts.items()}, 0.9)  # 8 px from A, 12 px from B
    res = evaluate_frames([(frame(gts), [between, exact_a])])
    # pck: between matches A and B fully (1, 1) -> argmax picks A; exact_a matches A only -> A.
    # A keeps the first maximum (between); exact_a is a false positive; B is missed.
    # sorted: between TP (.9), exact_a FP (.5); 2 GT -> precision [1, .5], recall [.5, .5] -> AP 50
    assert res.total == 50.0


def test_gt_without_prediction_does_not_capture_one() -> None:
    """A GT person no prediction matches stays unassigned (poseval's ``prToGT[val == 0] = -1``)."""
    missed = person(full_pose(900.0, 500.0))
    found = person(full_pose(100.0, 100.0))
    res = evaluate_frames([(frame([missed, found]), [person(full_pose(100.0, 100.0), 1.0)])])
    assert res.total == 50.0  # every joint: one TP out of two GT -> precision 1 up to recall 1/2
    assert all(r == 50.0 for r in res.recall.values())


def test_frame_without_people_is_skipped() -> None:
    gt = person(full_pose(100.0, 100.0))
    pred = person(full_pose(100.0, 100.0), 0.5)
    empty = frame([], image_id=2)
    lonely = person(full_pose(700.0, 300.0), 0.99)
    res = evaluate_frames([(frame([gt]), [pred]), (empty, [lonely])])
    assert res.total == 100.0 and res.counts["frames"] == 1 and res.counts["pred_persons"] == 1
    # A frame whose people have no labelled joint is kept: its predictions are false positives.
    unlabeled = frame([Person(np.zeros((NUM_JOINTS, 3)), head_box_xywh=HEAD_BOX.copy())], image_id=3)
    res = evaluate_frames([(frame([gt]), [pred]), (unlabeled, [lonely])])
    assert res.counts["frames"] == 2 and res.total == 50.0


def test_point_on_ignore_region_edge_is_kept() -> None:
    """shapely's contains() excludes the boundary; a point strictly inside is dropped."""
    square = np.array([[0.0, 0.0], [200.0, 0.0], [200.0, 200.0], [0.0, 200.0]])
    # left edge, bottom edge and a vertex: without the boundary rule the first two would count as inside
    on_edge = person({"head_top": (0.0, 50.0), "head_bottom": (100.0, 0.0), "left_hip": (200.0, 200.0)})
    inside = person({"nose": (100.0, 100.0)})
    outside = person({"nose": (300.0, 100.0)})
    res = evaluate_frames([(frame([on_edge, inside, outside], [square]), [])])
    assert res.counts["gt_joints"]["head_top"] == 1
    assert res.counts["gt_joints"]["head_bottom"] == 1
    assert res.counts["gt_joints"]["left_hip"] == 1
    assert res.counts["gt_joints"]["nose"] == 1
    assert res.counts["gt_persons"] == 2


def test_missing_head_box_is_a_data_error() -> None:
    gt = person(full_pose(100.0, 100.0))
    gt.head_box_xywh = None
    with pytest.raises(DataError, match="no head box"):
        evaluate_frames([(frame([gt]), [person(full_pose(100.0, 100.0), 1.0)])])


# ----------------------------------------------------------------------------- files


def test_prediction_file_roundtrip(posetrack18: Path, tmp_path: Path) -> None:
    split = load_split(posetrack18)
    perfect_predictions(split, tmp_path)
    doc = json.loads((tmp_path / "009473_mpii_test.json").read_text())
    gt_doc = json.loads((posetrack18 / "annotations/val/009473_mpii_test.json").read_text())
    assert doc["images"] == gt_doc["images"]
    assert doc["categories"][0]["keypoints"] == list(POSETRACK_JOINTS)
    ann = doc["annotations"][0]
    assert len(ann["keypoints"]) == 51 and len(ann["scores"]) == 17
    assert {"image_id", "track_id", "category_id"} <= ann.keys()
    assert sorted(a["track_id"] for a in doc["annotations"]) == [0, 1]


def test_write_predictions_rejects_bad_input(posetrack18: Path, tmp_path: Path) -> None:
    video = load_split(posetrack18).video("009473_mpii_test")
    images = [f.raw for f in video.frames]
    p = person(full_pose(1.0, 1.0), 1.0)
    q = person(full_pose(1.0, 1.0), 1.0)
    p.track_id = q.track_id = 4
    with pytest.raises(DataError, match="track id 4 is used twice"):
        write_predictions(tmp_path, video.name, images, {video.frames[0].image_id: [p, q]})
    with pytest.raises(DataError, match="not among the images"):
        write_predictions(tmp_path, video.name, images, {123: [p]})
    with pytest.raises(DataError, match="does not exist"):
        write_predictions(tmp_path / "no", video.name, images, {})
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_missing_and_malformed_prediction_files(posetrack18: Path, tmp_path: Path) -> None:
    gt_dir = posetrack18 / "annotations/val"
    perfect_predictions(load_split(posetrack18), tmp_path)
    (tmp_path / "003418_mpii_test.json").unlink()
    with pytest.raises(DataError, match=r"003418_mpii_test\.json"):
        evaluate(gt_dir, tmp_path)
    res = evaluate(gt_dir, tmp_path, missing="empty")
    assert res.counts["missing_prediction_files"] == ["003418_mpii_test.json"]
    assert res.counts["gt_persons"] == 14 and res.counts["pred_persons"] == 13
    assert 0.0 < res.total < 100.0
    (tmp_path / "003418_mpii_test.json").write_text("{not json")
    with pytest.raises(DataError, match=r"003418_mpii_test\.json is not valid JSON"):
        evaluate(gt_dir, tmp_path)
    (tmp_path / "003418_mpii_test.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataError, match="has 0 images but the ground truth has 1"):
        evaluate(gt_dir, tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        evaluate(gt_dir, tmp_path / "nope")


def test_result_serialisation_and_table() -> None:
    preds = [person({"head_top": (100.0, 100.0), "nose": (0.0, 5.0)}, 1.0)]
    res = evaluate_frames([(frame([person({"head_top": (100.0, 100.0)})]), preds)])
    assert isinstance(res, EvalResult)
    d = res.to_dict()
    json.dumps(d, allow_nan=False)  # NaN (nose: predicted, never labelled) becomes null
    assert d["ap"]["nose"] is None and d["ap"]["head_top"] == 100.0
    table = format_table(res, per_joint=True)
    for name in ("Head", "Shou", "Elb", "Wri", "Hip", "Knee", "Ankl", "Total", "head_top"):
        assert name in table


def _corrupt(doc: dict, case: str) -> tuple[dict, str]:
    """A copy of a PoseTrack18 file broken one way, and the field its error must name."""
    doc = copy.deepcopy(doc)
    ann = doc["annotations"][0]
    if case == "nan-score":
        ann["scores"][0] = float("nan")
        return doc, r"annotations\[0\]: 'scores' holds NaN"
    if case == "inf-score":
        ann["scores"][3] = float("inf")
        return doc, r"annotations\[0\]: 'scores' holds NaN or Infinity"
    if case == "nan-keypoint":
        ann["keypoints"][0] = float("nan")
        return doc, r"annotations\[0\]: 'keypoints' holds NaN"
    if case == "no-annotations":
        del doc["annotations"]
        return doc, ": no 'annotations' list"
    if case == "no-keypoints":
        del ann["keypoints"]
        return doc, r"annotations\[0\]: a person without 'keypoints'"
    if case == "string-image-id":
        ann["image_id"] = "frame-1"
        return doc, r"annotations\[0\]: 'image_id' must be an integer, got \"frame-1\""
    if case == "null-image-id":
        ann["image_id"] = None
        return doc, r"annotations\[0\]: 'image_id' must be an integer, got null"
    raise AssertionError(case)


PRED_CASES = ["nan-score", "inf-score", "nan-keypoint", "no-annotations", "string-image-id", "null-image-id"]


@pytest.mark.parametrize("case", PRED_CASES)
def test_broken_prediction_files_are_refused_naming_file_and_field(
    posetrack18: Path, tmp_path: Path, case: str
) -> None:
    """These scored AP 100 (NaN/Inf scores), 0 (no annotations) or gave 'internal error: ValueError'."""
    gt_dir = posetrack18 / "annotations/val"
    perfect_predictions(load_split(posetrack18), tmp_path)
    name = "009473_mpii_test.json"
    doc, field = _corrupt(json.loads((tmp_path / name).read_text()), case)
    (tmp_path / name).write_text(json.dumps(doc))
    with pytest.raises(
        DataError, match=re.escape(str(tmp_path / name)) + (" " if field[0] != ":" else "") + field
    ):
        evaluate(gt_dir, tmp_path)


@pytest.mark.parametrize("case", ["nan-keypoint", "no-keypoints", "string-image-id"])
def test_broken_ground_truth_is_refused_naming_file_and_field(
    posetrack18: Path, tmp_path: Path, case: str
) -> None:
    preds = tmp_path / "pred"
    preds.mkdir()
    perfect_predictions(load_split(posetrack18), preds)
    gt = tmp_path / "gt"
    gt.mkdir()
    name = "009473_mpii_test.json"
    for f in (posetrack18 / "annotations/val").glob("*.json"):
        (gt / f.name).write_text(f.read_text())
    doc = json.loads((gt / name).read_text())
    doc["annotations"][0]["scores"] = []
    doc, field = _corrupt(doc, case)
    (gt / name).write_text(json.dumps(doc))
    with pytest.raises(DataError, match=re.escape(str(gt / name)) + (" " if field[0] != ":" else "") + field):
        evaluate(gt, preds)


def test_ground_truth_without_people_gives_nan_not_zero() -> None:
    res = evaluate_frames([(frame([]), [person(full_pose(1.0, 1.0), 1.0)])])
    assert math.isnan(res.total) and all(math.isnan(v) for v in res.groups.values())
    unlabelled = frame([Person(np.zeros((NUM_JOINTS, 3)), head_box_xywh=HEAD_BOX.copy())], image_id=2)
    res = evaluate_frames([(unlabelled, [])])
    assert math.isnan(res.total) and all(math.isnan(v) for v in res.ap.values())


# ----------------------------------------------------------------------------- bounded memory, bad ids


def _crowd(n_pred: int, seed: int = 0) -> tuple[Frame, list[Person]]:
    """One frame: 3 GT people, an ignore region, and ``n_pred`` predictions with repeats and score ties."""
    rng = np.random.default_rng(seed)
    region = np.array([[0.0, 0.0], [300.0, 0.0], [300.0, 300.0], [150.0, 350.0], [0.0, 300.0]])
    gts = [person(full_pose(100.0 + 200 * k, 100.0 + 40 * k)) for k in range(3)]
    base = [full_pose(100.0 + 200 * k, 100.0 + 40 * k) for k in range(3)]
    preds = []
    for i in range(n_pred):
        pose = {n: (x + rng.normal(0, 12), y + rng.normal(0, 12)) for n, (x, y) in base[i % 3].items()}
        preds.append(person(pose, float(rng.integers(0, 4)) / 4))  # few distinct scores: many ties
    preds += [copy.deepcopy(p) for p in preds[:5]]  # exact duplicates: first-on-ties matters
    return frame(gts, [region]), preds


def test_chunked_evaluation_equals_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of one prediction (or one point) give exactly the one-chunk (unchunked) answer."""
    from tdmi.eval import poseval

    f, preds = _crowd(60)
    monkeypatch.setattr(poseval, "CHUNK_ELEMENTS", 1 << 40)
    whole = evaluate_frames([(copy.deepcopy(f), copy.deepcopy(preds))]).to_dict()
    monkeypatch.setattr(poseval, "CHUNK_ELEMENTS", 1)
    chunked = evaluate_frames([(copy.deepcopy(f), copy.deepcopy(preds))]).to_dict()
    assert chunked == whole
    assert 0.0 < whole["total"] < 100.0 and whole["counts"]["pred_persons"] > 0


def test_many_predictions_on_one_frame_run_in_bounded_memory() -> None:
    """The ignore-region test and the matching were dense in the number of predictions (10^6: 7.4 GiB)."""
    import tracemalloc

    f, preds = _crowd(20_000, seed=1)
    tracemalloc.start()
    try:
        res = evaluate_frames([(f, preds)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.counts["pred_persons"] > 0
    # Inputs are ~20k x 15 joints; dense point x vertex or prediction x GT x joint arrays were > 200 MB.
    assert peak < 48 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_predictions_for_unknown_image_ids_are_an_error(posetrack18: Path, tmp_path: Path) -> None:
    """They scored 0.0 with exit 0; now the error names the ids."""
    perfect_predictions(load_split(posetrack18), tmp_path)
    path = tmp_path / "009473_mpii_test.json"
    doc = json.loads(path.read_text())
    for a in doc["annotations"]:
        a["image_id"] = 0  # what tdmi-infer wrote before issue 20
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"009473_mpii_test\.json: 2 prediction\(s\) have image ids \[0\]"):
        evaluate(posetrack18 / "annotations/val", tmp_path)
