"""tdmi-infer: whole-video pose tracking, the feature cache's exactness, outputs and input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tdmi.cli.common import run_app
from tdmi.cli.infer import app
from tdmi.errors import DataError
from tdmi.model import TDMI, get_preset
from tdmi.runtime.torch_backend import TorchFramePredictor, TorchPredictor
from tdmi.video import full_frame_tracks, open_source, run_video
from tdmi.video.boxes import iou_track, load_boxes, load_mot_csv, make_tracks
from tdmi.video.infer import infer_video

CLIP = "000001_mpiinew_test"


@pytest.fixture(scope="module")
def clip_dir(posetrack18: Path) -> Path:
    return posetrack18 / "videos" / CLIP


@pytest.fixture(scope="module")
def clip_mp4(clip_dir: Path) -> Path:
    return clip_dir / f"{CLIP}.mp4"


def _frames_dir(src: Path, dst: Path, n: int | None = None) -> Path:
    dst.mkdir()
    for f in sorted(src.glob("*.jpg"))[:n]:
        shutil.copy(f, dst / f.name)
    return dst


def _model(num_frames: int = 3) -> TDMI:
    torch.manual_seed(0)
    return TDMI(get_preset("tdmi-tiny").replace(num_frames=num_frames)).eval()


def _read_video(path: Path) -> tuple[int, int, int, float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} is not playable"
    n = 0
    while True:
        ok, _ = cap.read()
        if not ok:
            break
        n += 1
    w, h, fps = (
        int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        cap.get(cv2.CAP_PROP_FPS),
    )
    cap.release()
    return n, w, h, fps


def test_done_when_cli_full_frame_clip_and_reuse(clip_mp4: Path, tmp_path: Path) -> None:
    """The issue's command: JSON, CSV, a playable overlay (same frames/size/fps) and the PNG; reuse agrees."""
    out = tmp_path / "out"
    args = [str(clip_mp4), "--config", "tdmi-tiny", "--full-frame", "-o", str(out)]
    assert run_app(app, args) == 0
    n_in, w_in, h_in, fps_in = _read_video(clip_mp4)
    n, w, h, fps = _read_video(out / f"{CLIP}_overlay.mp4")
    assert (n, w, h) == (n_in, w_in, h_in) == (5, 1280, 720)
    assert fps == pytest.approx(fps_in, rel=1e-3)
    sheet = cv2.imread(str(out / f"{CLIP}_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 100
    doc = json.loads((out / f"{CLIP}.json").read_text())
    assert len(doc["images"]) == 5 and len(doc["annotations"]) == 5
    assert {a["track_id"] for a in doc["annotations"]} == {0}
    assert all(len(a["keypoints"]) == 51 for a in doc["annotations"])
    assert doc["tdmi"]["backbone_passes"] == 15 and doc["tdmi"]["reuse_features"] is False
    rows = (out / f"{CLIP}.csv").read_text().splitlines()
    assert rows[0] == "frame,track,joint,x,y,score" and len(rows) == 1 + 5 * 17

    out2 = tmp_path / "reuse"
    assert run_app(app, [*args[:-1], str(out2), "--reuse-features"]) == 0
    doc2 = json.loads((out2 / f"{CLIP}.json").read_text())
    assert doc2["tdmi"]["backbone_passes"] == 5  # once per frame instead of T=3 times
    assert doc2["tdmi"]["cache_hit_rate"] > 0.6
    k1 = np.array([a["keypoints"] for a in doc["annotations"]])
    k2 = np.array([a["keypoints"] for a in doc2["annotations"]])
    np.testing.assert_allclose(k2, k1, atol=1e-3)


@pytest.mark.parametrize("num_frames", [3, 5])
def test_reuse_equals_clip_by_clip_full_frame(clip_dir: Path, num_frames: int) -> None:
    """Exactness: with the same crop per frame, cached features give the clip-by-clip heatmaps (1e-5)."""
    model = _model(num_frames)
    src = open_source(clip_dir)
    tracks = full_frame_tracks(src.width, src.height)
    clip = run_video(src, tracks, TorchPredictor(model), keep_heatmaps=True)
    reuse = run_video(src, tracks, None, frame_predictor=TorchFramePredictor(model), keep_heatmaps=True)
    assert clip.backbone_passes == 5 * num_frames and reuse.backbone_passes == 5
    for a, b in zip(clip.heatmaps, reuse.heatmaps, strict=True):
        assert np.abs(a - b).max() <= 1e-5
    for p, q in zip(clip.poses, reuse.poses, strict=True):
        np.testing.assert_allclose(q.keypoints, p.keypoints, atol=1e-3)


def _write_csv(path: Path, rows: list[tuple[int, int, float, float, float, float]]) -> Path:
    path.write_text(
        "frame,id,x,y,w,h,score\n" + "".join(f"{f},{i},{x},{y},{w},{h},0.9\n" for f, i, x, y, w, h in rows)
    )
    return path


def test_identical_boxes_key_policy_reuses_exactly(clip_dir: Path, tmp_path: Path) -> None:
    """Two tracks with fixed boxes: the key policy's cache hits, and results equal clip by clip."""
    model = _model()
    rows = [(f, i, 100.0 + 500 * i, 80.0, 300.0, 560.0) for f in range(1, 6) for i in (1, 2)]
    tracks = make_tracks(load_mot_csv(_write_csv(tmp_path / "b.csv", rows)))
    src = open_source(clip_dir)
    clip = run_video(src, tracks, TorchPredictor(model), keep_heatmaps=True)
    reuse = run_video(src, tracks, None, frame_predictor=TorchFramePredictor(model), keep_heatmaps=True)
    assert reuse.backbone_passes == 10 and clip.backbone_passes == 30
    assert max(np.abs(a - b).max() for a, b in zip(clip.heatmaps, reuse.heatmaps, strict=True)) <= 1e-5
    assert {p.track_id for p in reuse.poses} == {1, 2}


def test_moving_boxes_policies(clip_dir: Path, tmp_path: Path) -> None:
    """Moving boxes: `key` recomputes (no reuse), `frame`/`smoothed` run the backbone once per frame."""
    model = _model()
    rows = [(f, 7, 100.0 + 20 * f, 80.0, 300.0, 560.0) for f in range(1, 6)]
    tracks = make_tracks(load_mot_csv(_write_csv(tmp_path / "m.csv", rows)))
    src = open_source(clip_dir)
    fp = TorchFramePredictor(model)
    key = run_video(src, tracks, None, frame_predictor=fp, box_policy="key")
    frame = run_video(src, tracks, None, frame_predictor=fp, box_policy="frame")
    smooth = run_video(src, tracks, None, frame_predictor=fp, box_policy="smoothed")
    assert frame.backbone_passes == 5 and smooth.backbone_passes == 5
    assert key.backbone_passes > 5
    # frame policy: clip-by-clip with per-frame crops gives the same answer as its cache
    clip = run_video(src, tracks, TorchPredictor(model), box_policy="frame", keep_heatmaps=True)
    reuse = run_video(src, tracks, None, frame_predictor=fp, box_policy="frame", keep_heatmaps=True)
    assert max(np.abs(a - b).max() for a, b in zip(clip.heatmaps, reuse.heatmaps, strict=True)) <= 1e-5


def test_iou_tracker_links_moving_boxes() -> None:
    from tdmi.video.boxes import Det

    dets = {
        f: [Det(np.array([10.0 + 5 * f, 10, 50, 100]), 0.9), Det(np.array([300.0 - 5 * f, 10, 50, 100]), 0.8)]
        for f in range(6)
    }
    dets[3].reverse()  # detector order must not matter
    tracks = iou_track(dets)
    assert len(tracks) == 2
    assert all(sorted(t.boxes) == list(range(6)) for t in tracks)
    assert all(abs(t.boxes[5][0] - t.boxes[0][0]) == 25 for t in tracks)
    untracked = make_tracks(dets, tracker=False)
    assert len(untracked) == 12


def _no_outputs(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


def test_bad_inputs_are_one_line_errors(
    clip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"

    def fails(args: list[str], words: str) -> None:
        assert run_app(app, [*args, "--config", "tdmi-tiny", "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
        assert _no_outputs(out), sorted(out.iterdir())

    (tmp_path / "empty").mkdir()
    fails([str(tmp_path / "empty"), "--full-frame"], "holds no images")
    (tmp_path / "bad.mp4").write_text("not a video")
    fails([str(tmp_path / "bad.mp4"), "--full-frame"], "cannot open video")
    mixed = _frames_dir(clip_dir, tmp_path / "mixed", 3)
    small = cv2.resize(cv2.imread(str(mixed / "000002.jpg")), (640, 360))
    cv2.imwrite(str(mixed / "000002.jpg"), small)
    fails([str(mixed), "--full-frame"], "all frames must have the same size")
    three = _frames_dir(clip_dir, tmp_path / "three", 3)
    far = _write_csv(tmp_path / "far.csv", [(f, 1, 10, 10, 100, 200) for f in range(1, 6)])
    fails([str(three), "--boxes", str(far)], "has a box on frame 4 but the input has frames 0..2")
    gap = _write_csv(tmp_path / "gap.csv", [(f, 1, 10, 10, 100, 200) for f in (1, 2, 5)])
    fails([str(three), "--boxes", str(gap)], "track 1 has a gap")
    fails([str(three)], "say where person boxes come from")


def test_frames_folder_and_detections_json(clip_dir: Path, tmp_path: Path) -> None:
    """A frame folder with PoseTrack-style detections (image ids TSSSSSSFFFF), tracked by IoU."""
    dets = [
        {
            "image_id": 30000010000 + f,
            "bbox": [400.0 + 4 * f, 100.0, 260.0, 500.0],
            "score": 0.9,
            "category_id": 1,
        }
        for f in range(5)
    ] + [{"image_id": 30000010002, "bbox": [10.0, 10.0, 50.0, 50.0], "score": 0.1, "category_id": 1}]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    model = _model()
    out = infer_video(clip_dir, tmp_path / "o", TorchPredictor(model), boxes=path, overlay=False, sheet=False)
    assert out.overlay is None and out.result.num_tracks == 1 and len(out.result.poses) == 5
    doc = json.loads(out.json.read_text())
    assert doc["images"][0]["file_name"] == f"{CLIP}/000000.jpg"
    assert doc["tdmi"]["box_policy"] == "key"


def test_source_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_source(tmp_path / "nope.mp4")


@pytest.fixture(scope="module")
def split_pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tdmi.cli.export import app as export_app

    out = tmp_path_factory.mktemp("split") / "tiny.onnx"
    assert run_app(export_app, ["onnx", "--config", "tdmi-tiny", "--split", "-o", str(out)]) == 0
    return out


def test_split_export_pair_metadata_and_verification(
    split_pair: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tdmi.export import read_metadata
    from tdmi.export.metadata import load_onnx_checked

    b, h = split_pair.with_name("tiny.backbone.onnx"), split_pair.with_name("tiny.head.onnx")
    assert b.is_file() and h.is_file() and not split_pair.exists()
    mb, mh = read_metadata(load_onnx_checked(b)), read_metadata(load_onnx_checked(h))
    assert (mb["extra"]["split"], mh["extra"]["split"]) == ("backbone", "head")
    assert mb["config"].name == mh["config"].name == "tdmi-tiny"
    hm = load_onnx_checked(h)
    assert sum(n.op_type == "DeformConv" for n in hm.graph.node) == 4
    assert [i.name for i in hm.graph.input] == ["stage1", "stage2", "stage3", "stage4"]


def test_split_pair_runs_reuse_on_onnxruntime(split_pair: Path, clip_dir: Path) -> None:
    """The runtime loads the pair; ORT reuse equals torch clip-by-clip (same seed-0 weights)."""
    from tdmi.runtime.features import OnnxFramePredictor

    torch.manual_seed(0)
    model = TDMI(get_preset("tdmi-tiny")).eval()  # the export's random weights (seed 0)
    src = open_source(clip_dir)
    tracks = full_frame_tracks(src.width, src.height)
    clip = run_video(src, tracks, TorchPredictor(model), keep_heatmaps=True)
    fp = OnnxFramePredictor(split_pair)
    reuse = run_video(src, tracks, None, frame_predictor=fp, keep_heatmaps=True)
    assert reuse.backend == "onnxruntime" and reuse.backbone_passes == 5
    assert max(np.abs(a - b).max() for a, b in zip(clip.heatmaps, reuse.heatmaps, strict=True)) <= 1e-5


def test_split_pair_missing_half_is_clear(split_pair: Path, tmp_path: Path) -> None:
    from tdmi.errors import ExportError
    from tdmi.runtime.features import OnnxFramePredictor

    shutil.copy(split_pair.with_name("tiny.backbone.onnx"), tmp_path / "x.backbone.onnx")
    with pytest.raises(ExportError, match=r"x\.head\.onnx not found"):
        OnnxFramePredictor(tmp_path / "x.onnx")


def test_moving_figure_video_boxes_follow_the_figure() -> None:
    from tdmi.data.sample import moving_figure_video

    video, boxes = moving_figure_video(5, (180, 320), seed=4, speed=4.0)
    assert len(video.frames) == 5 and boxes.shape == (5, 4)
    kp = video.keypoints[:, :, :2]
    inside = (kp[..., 0] >= boxes[:, None, 0]) & (kp[..., 0] <= boxes[:, None, 0] + boxes[:, None, 2])
    assert inside.all()
    assert abs(boxes[-1, 0] - boxes[0, 0]) > 1.0  # the figure moves, so do its boxes


def test_policy_benchmark_counts_backbone_passes(tiny_checkpoint: Path) -> None:
    """The accuracy benchmark runs all three policies; frame/smoothed need one backbone pass per frame."""
    from tdmi.benchmarks.video_reuse import accuracy

    (row,) = accuracy(tiny_checkpoint, videos=1, frames=4, speeds=[2.0], jitters=[0.05], alpha=0.05)
    assert row["passes_frame"] == row["passes_smoothed"] == 4
    assert row["passes_key"] > 4
    assert 0.0 <= row["pck_key"] <= 1.0 and 0.0 <= row["agree_frame"] <= 1.0


def test_posetrack_gt_and_merged_detections(posetrack18: Path, tmp_path: Path) -> None:
    """GT boxes keep their track ids; a merged detections file is narrowed to the input's sequence."""
    model = _model()
    seq = posetrack18 / "images" / "val" / "009473_mpii_test"
    gt = infer_video(
        seq,
        tmp_path / "gt",
        TorchPredictor(model),
        boxes="gt",
        annotations=posetrack18 / "annotations" / "val" / "009473_mpii_test.json",
        overlay=False,
        sheet=False,
    )
    assert sorted(p.track_id for p in gt.result.poses) == [0, 1]
    dets = posetrack18 / "annotations" / "test_posetrack18_human_detections.json"
    boxes = load_boxes(dets, score_thr=0.3, video_name="009473_mpii_test")
    n_seq = sum(1 for d in json.loads(dets.read_text()) if d["image_id"] == 10094730000 and d["score"] >= 0.3)
    assert list(boxes) == [0] and len(boxes[0]) == n_seq
    with pytest.raises(DataError, match="3 PoseTrack sequences"):
        load_boxes(dets, video_name="my_video")
