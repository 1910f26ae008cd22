"""PoseTrack reading, boxes and clip building, on the real PoseTrack18 fixture and small synthetic files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tdmi.data.annotations import (
    FORMAT_2017,
    FORMAT_2018,
    FORMAT_2021,
    Frame,
    Person,
    Video,
    load_annotation_file,
)
from tdmi.data.posetrack import boxes_from_gt, clip_frame_paths, iter_samples, load_detections, load_split
from tdmi.errors import DataError
from tdmi.spec.joints import POSETRACK_JOINTS

# Fixture README: labelled keypoints per joint over the 14 people of the merged file.
README_JOINT_COUNTS = [13, 14, 14, 0, 0, 14, 14, 10, 14, 11, 11, 13, 13, 10, 11, 10, 10]
DETECTIONS = "annotations/test_posetrack18_human_detections.json"


def _all_persons(split) -> list[Person]:
    return [p for v in split for f in v.frames for p in f.persons]


def test_load_split_official_layout(posetrack18: Path) -> None:
    split = load_split(posetrack18, "val")
    assert split.image_root == posetrack18
    by_name = {v.name: v for v in split}
    assert sorted(by_name) == ["003418_mpii_test", "009473_mpii_test", "012834_mpii_test"]
    assert {n: len(v.frames[0].persons) for n, v in by_name.items()} == {
        "003418_mpii_test": 1,
        "009473_mpii_test": 2,
        "012834_mpii_test": 11,
    }
    assert {n: v.nframes for n, v in by_name.items()} == {
        "003418_mpii_test": 149,
        "009473_mpii_test": 101,
        "012834_mpii_test": 140,
    }
    assert {len(v.frames[0].ignore_regions) for v in split} == {4, 2, 9}
    v = by_name["012834_mpii_test"]
    assert v.format == FORMAT_2018
    frame = v.frames[0]
    assert (frame.image_id, frame.frame_index, frame.is_labeled) == (10128340000, 0, True)
    assert (frame.width, frame.height) == (1920, 1080)
    assert sorted(p.track_id for p in frame.persons) == list(range(11))


def test_merged_file_counts_match_readme(posetrack18: Path) -> None:
    merged = load_split(posetrack18 / "annotations" / "test_posetrack18_val.json")
    assert [v.name for v in merged] == ["012834_mpii_test", "009473_mpii_test", "003418_mpii_test"]
    assert merged.image_root == posetrack18  # found by looking for the frames above the file
    persons = _all_persons(merged)
    assert len(persons) == 14
    labeled = np.sum([p.labeled for p in persons], axis=0)
    assert labeled.tolist() == README_JOINT_COUNTS
    assert int(labeled.sum()) == 182
    # Ears are never labelled; keypoints are in PoseTrack order with the visibility flag kept.
    assert not any(p.labeled[POSETRACK_JOINTS.index("left_ear")] for p in persons)
    p = next(p for p in persons if p.annotation_id == 1003418000000)
    assert p.keypoints[POSETRACK_JOINTS.index("right_knee")].tolist() == [1416.0, 429.0, 1.0]
    assert p.head_box_xywh is not None and p.head_box_xywh.tolist() == [346.0, 337.0, 296.0, 237.0]
    assert p.keypoint_scores is None  # GT carries "scores": []


def test_folder_of_jsons_equals_layout(posetrack18: Path) -> None:
    a = load_split(posetrack18)
    b = load_split(posetrack18 / "annotations" / "val")
    assert [v.name for v in a] == [v.name for v in b]
    assert b.image_root == posetrack18
    assert sum(p.num_labeled for p in _all_persons(b)) == 182


def test_missing_and_malformed_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_split(tmp_path / "nope")
    with pytest.raises(DataError, match=r"no \.json"):
        load_split(tmp_path)
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [')
    with pytest.raises(DataError, match=r"broken\.json is not valid JSON"):
        load_split(tmp_path)
    other = tmp_path / "other.json"
    other.write_text('{"foo": 1}')
    with pytest.raises(DataError, match=r"other\.json: not a PoseTrack annotation file"):
        load_annotation_file(other)
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"images": [{"id": 1, "file_name": "a/000000.jpg"}],
                                 "annotations": [{"image_id": 1, "keypoints": [1, 2, 1]}]}))  # fmt: skip
    with pytest.raises(DataError, match=r"short.json annotations\[0\]: 'keypoints' must hold 51"):
        load_annotation_file(short)


def test_posetrack17_annolist_joint_ids(tmp_path: Path) -> None:
    # poseval ids: 0 right_ankle, 8 right_shoulder, 12 head_bottom (neck), 13 nose, 14 head_top.
    doc = {
        "annolist": [
            {
                "image": [{"name": "images/bonn/000342_mpii/00000001.jpg"}],
                "imgnum": [1],
                "is_labeled": [1],
                "ignore_regions": [
                    {"point": [{"x": [0], "y": [0]}, {"x": [10], "y": [0]}, {"x": [10], "y": [10]}]}
                ],
                "annorect": [
                    {
                        "x1": [100], "y1": [50], "x2": [130], "y2": [90], "track_id": [3],
                        "annopoints": [{"point": [
                            {"id": [0], "x": [110.0], "y": [400.0], "is_visible": [1]},
                            {"id": [8], "x": [90.0], "y": [150.0], "is_visible": [0]},
                            {"id": [12], "x": [115.0], "y": [100.0]},
                            {"id": [13], "x": [116.0], "y": [70.0]},
                            {"id": [14], "x": [117.0], "y": [40.0]},
                        ]}],
                    }
                ],
            },
            {"image": [{"name": "images/bonn/000342_mpii/00000002.jpg"}], "imgnum": [2], "annorect": []},
        ]
    }  # fmt: skip
    path = tmp_path / "000342.json"
    path.write_text(json.dumps(doc))
    (video,) = load_annotation_file(path)
    assert video.format == FORMAT_2017 and video.name == "000342"
    assert [f.frame_index for f in video.frames] == [0, 1]
    assert [f.is_labeled for f in video.frames] == [True, False]
    p = video.frames[0].persons[0]
    idx = {n: i for i, n in enumerate(POSETRACK_JOINTS)}
    assert p.keypoints[idx["right_ankle"]].tolist() == [110.0, 400.0, 1.0]
    assert p.keypoints[idx["right_shoulder"]].tolist() == [90.0, 150.0, 0.0]
    assert p.labeled[idx["right_shoulder"]]  # poseval: a listed point is labelled even if not visible
    assert p.keypoints[idx["head_bottom"], :2].tolist() == [115.0, 100.0]
    assert p.keypoints[idx["nose"], :2].tolist() == [116.0, 70.0]
    assert p.keypoints[idx["head_top"], :2].tolist() == [117.0, 40.0]
    assert p.num_labeled == 5 and p.track_id == 3
    assert p.head_box_xywh is not None and p.head_box_xywh.tolist() == [100.0, 50.0, 30.0, 40.0]
    assert video.frames[0].image_id == 10003420000
    assert video.frames[0].ignore_regions[0].shape == (3, 2)


def test_posetrack21_detected_and_person_id(posetrack18: Path, tmp_path: Path) -> None:
    doc = json.loads((posetrack18 / "annotations/val/009473_mpii_test.json").read_text())
    for i, ann in enumerate(doc["annotations"]):
        ann["person_id"] = 100 + i
    path = tmp_path / "009473_mpii_test.json"
    path.write_text(json.dumps(doc))
    (video,) = load_annotation_file(path)
    assert video.format == FORMAT_2021
    assert [p.person_id for p in video.frames[0].persons] == [100, 101]


def test_detections_reader_counts(posetrack18: Path) -> None:
    all_dets = load_detections(posetrack18 / DETECTIONS, score_thr=0.0)
    assert sum(len(d) for d in all_dets.values()) == 278
    assert {k: len(v) for k, v in all_dets.items()} == {10128340000: 100, 10034180000: 100, 10094730000: 78}
    kept = load_detections(posetrack18 / DETECTIONS, score_thr=0.3)
    assert sum(len(d) for d in kept.values()) == 119
    for dets in kept.values():
        scores = [d.score for d in dets]
        assert scores == sorted(scores, reverse=True) and min(scores) >= 0.3


def test_detections_malformed(tmp_path: Path) -> None:
    p = tmp_path / "dets.json"
    p.write_text(json.dumps([{"image_id": 1, "bbox": [1, 2, 3], "score": 0.5}]))
    with pytest.raises(DataError, match=r"dets.json \[0\]: bbox must be"):
        load_detections(p)
    p.write_text(json.dumps({"image_id": 1}))
    with pytest.raises(DataError, match="expected a JSON list"):
        load_detections(p)


def test_iter_samples_gt_and_detections(posetrack18: Path) -> None:
    split = load_split(posetrack18)
    gt = list(iter_samples(split, "gt"))
    assert len(gt) == 14
    assert all(s.person is not None and s.score == 1.0 for s in gt)
    assert all(s.image_path.is_file() for s in gt)
    dets = list(iter_samples(split, load_detections(posetrack18 / DETECTIONS, 0.3)))
    assert len(dets) == 119 and all(s.person is None for s in dets)
    with pytest.raises(DataError, match="boxes must be"):
        list(iter_samples(split, "detections"))  # type: ignore[arg-type]


def test_boxes_from_gt_skips_people_without_keypoints(posetrack18: Path) -> None:
    frame = load_split(posetrack18).video("009473_mpii_test").frames[0]
    frame.persons[0].labeled[:] = False
    boxes = boxes_from_gt(frame)
    assert len(boxes) == 1 and boxes[0][2] is frame.persons[1]
    assert len(boxes_from_gt(frame, require_keypoints=False)) == 2


def test_clip_on_fixture_clamps_and_names_missing_frame(posetrack18: Path) -> None:
    split = load_split(posetrack18)
    video = split.video("012834_mpii_test")
    folder = posetrack18 / "images/val/012834_mpii_test"
    assert clip_frame_paths(video, 0, 1, split.image_root) == [folder / "000000.jpg"]
    # T=3 at key frame 0 clamps to [0, 0, 1]; only 000000.jpg exists in the fixture.
    with pytest.raises(DataError, match=r"012834_mpii_test/000001\.jpg"):
        clip_frame_paths(video, 0, 3, split.image_root)
    assert clip_frame_paths(video, 0, 3, split.image_root, missing="nearest") == [folder / "000000.jpg"] * 3
    with pytest.raises(DataError, match="odd"):
        clip_frame_paths(video, 0, 4, split.image_root)
    with pytest.raises(DataError, match=r"key frame .*000000\.jpg is missing"):
        clip_frame_paths(video, 0, 1, posetrack18 / "nowhere")


def _synthetic_video(tmp_path: Path, present: list[int], nframes: int = 5) -> Video:
    folder = tmp_path / "images/val/000001_mpii_test"
    folder.mkdir(parents=True)
    for i in present:
        (folder / f"{i:06d}.jpg").write_bytes(b"jpeg")
    frames = [
        Frame(i, f"images/val/000001_mpii_test/{i:06d}.jpg", i, True, 64, 48, [], []) for i in range(nframes)
    ]
    return Video("000001_mpii_test", frames, nframes=nframes)


def test_clip_clamps_at_both_ends(tmp_path: Path) -> None:
    video = _synthetic_video(tmp_path, [0, 1, 2, 3, 4])
    names = lambda paths: [int(p.stem) for p in paths]  # noqa: E731
    assert names(clip_frame_paths(video, 0, 5, tmp_path)) == [0, 0, 0, 1, 2]
    assert names(clip_frame_paths(video, 4, 5, tmp_path)) == [2, 3, 4, 4, 4]
    assert names(clip_frame_paths(video, 2, 3, tmp_path)) == [1, 2, 3]


def test_clip_nearest_for_partial_download(tmp_path: Path) -> None:
    video = _synthetic_video(tmp_path, [0, 1, 3])
    names = lambda paths: [int(p.stem) for p in paths]  # noqa: E731
    with pytest.raises(DataError, match=r"000002\.jpg"):
        clip_frame_paths(video, 1, 5, tmp_path)
    # indices [-1, 0, 1, 2, 3] -> clamped [0, 0, 1, 2, 3]; 2 is missing -> nearest, ties toward the key
    assert names(clip_frame_paths(video, 1, 5, tmp_path, missing="nearest")) == [0, 0, 1, 1, 3]
    assert names(clip_frame_paths(video, 3, 3, tmp_path, missing="nearest")) == [3, 3, 3]
