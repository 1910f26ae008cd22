"""Issue 20: damaged media, box checks, output folders and temp names, the overlay codec, and the
tdmi-infer -> tdmi-eval chain on PoseTrack ground truth."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tdmi.cli import eval as eval_cli
from tdmi.cli.common import run_app
from tdmi.cli.infer import app
from tdmi.data.boxes import MAX_BOX_SCALE, check_boxes
from tdmi.errors import DataError
from tdmi.model import TDMI, get_preset
from tdmi.runtime.torch_backend import TorchPredictor
from tdmi.utils import _TMP_FILE, sweep_stale_temps
from tdmi.video import open_source
from tdmi.video.infer import infer_video
from tdmi.video.source import read_image
from tdmi.video.writers import OVERLAY_CODECS, VideoCodec, overlay_video

REPO = Path(__file__).resolve().parents[2]
SEQ = "009473_mpii_test"


def _frame(i: int, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """A frame with a moving disc and noise rows (so that each frame costs bytes in the file)."""
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    img[::5] = np.random.default_rng(i).integers(0, 256, (len(img[::5]), w, 3), dtype=np.uint8)
    cv2.circle(img, (20 + 5 * i, h // 2), 12, (0, 255, 0), -1)
    return img


def _write_video(path: Path, fourcc: str, n: int) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (160, 120))
    assert w.isOpened()
    for i in range(n):
        w.write(_frame(i))
    w.release()
    return path


def _decoded(path: Path) -> tuple[int, int]:
    cap = cv2.VideoCapture(str(path))
    declared, n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return declared, n


@pytest.fixture(scope="module")
def zeroed_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's case: an mp4 with bytes in the middle zeroed decodes 2 of its 5 frames."""
    d = tmp_path_factory.mktemp("damaged")
    good = _write_video(d / "good.mp4", "mp4v", 5)
    data = bytearray(good.read_bytes())
    third = len(data) // 3
    data[third : 2 * third] = bytes(third)
    bad = d / "zeroed.mp4"
    bad.write_bytes(bytes(data))
    assert _decoded(good) == (5, 5) and _decoded(bad) == (5, 2)
    return bad


@pytest.fixture(scope="module")
def half_avi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 30-frame AVI cut in half: the header still declares 30 frames."""
    d = tmp_path_factory.mktemp("cut")
    good = _write_video(d / "good.avi", "MJPG", 30)
    data = good.read_bytes()
    cut = d / "half.avi"
    cut.write_bytes(data[: len(data) // 2])
    declared, got = _decoded(cut)
    assert declared == 30 and 0 < got < 30
    return cut


@pytest.fixture(scope="module")
def predictor() -> TorchPredictor:
    torch.manual_seed(0)
    return TorchPredictor(TDMI(get_preset("tdmi-tiny").replace(num_frames=3)).eval())


def _no_outputs(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


# -- damaged media ----------------------------------------------------------------------------------


def test_zeroed_mp4_is_an_error_naming_the_first_lost_frame(
    zeroed_mp4: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert run_app(app, [str(zeroed_mp4), "--config", "tdmi-tiny", "--full-frame", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "frame 2 could not be decoded" in err and "2 of the 5 frames" in err and "--allow-short" in err
    assert "Traceback" not in err and _no_outputs(out)


def test_allow_short_warns_with_the_count_and_keeps_boxes_on_lost_frames_unblamed(
    zeroed_mp4: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boxes = tmp_path / "tracks.csv"  # MOT frames from 1: boxes on all 5 declared frames
    boxes.write_text("".join(f"{f},1,10,10,100,90,1\n" for f in range(1, 6)))
    out = tmp_path / "out"
    args = [str(zeroed_mp4), "--config", "tdmi-tiny", "--boxes", str(boxes), "-o", str(out), "--no-overlay"]
    assert run_app(app, args) == 1
    err = capsys.readouterr().err
    assert "frame 2 could not be decoded" in err and "another video" not in err, err
    assert run_app(app, [*args, "--allow-short"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "3 of 5 frames could not be decoded" in err and "another video" not in err
    doc = json.loads((out / "zeroed.json").read_text())
    assert sorted(a["image_id"] for a in doc["annotations"]) == [0, 1]
    far = tmp_path / "far.csv"  # a box past the declared end is still another video's
    far.write_text("7,1,10,10,100,90,1\n")
    assert run_app(app, [*args[:3], "--boxes", str(far), *args[5:], "--allow-short"]) == 1
    assert "has a box on frame 6" in capsys.readouterr().err


def test_avi_cut_in_half_is_an_error(half_avi: Path) -> None:
    source = open_source(half_avi)
    assert source.num_frames == 30
    with pytest.raises(DataError, match=r"frame \d+ could not be decoded.* of the 30 frames"):
        for _ in source.frames():
            pass
    with pytest.warns(UserWarning, match=r"of 30 frames could not be decoded"):
        n = sum(1 for _ in open_source(half_avi, allow_short=True).frames())
    assert 0 < n < 30


def test_corrupt_jpeg_in_a_frames_folder_names_the_file(
    posetrack18: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for f in sorted((posetrack18 / "videos" / "000001_mpiinew_test").glob("*.jpg"))[:3]:
        shutil.copy(f, frames / f.name)
    data = (frames / "000001.jpg").read_bytes()
    (frames / "000001.jpg").write_bytes(data[: len(data) // 2])  # OpenCV decodes this as grey-filled
    assert cv2.imread(str(frames / "000001.jpg")) is not None
    out = tmp_path / "out"
    assert run_app(app, [str(frames), "--config", "tdmi-tiny", "--full-frame", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "cannot read frame 1" in err and "000001.jpg" in err and "damaged" in err and _no_outputs(out)
    # Whole JPEGs (real camera frames, scan data full of stuffed 0xFF bytes) pass, as they decode.
    for i, f in enumerate(sorted((posetrack18 / "videos" / "000001_mpiinew_test").glob("*.jpg"))):
        np.testing.assert_array_equal(read_image(f, i), cv2.imread(str(f)))
    (frames / "000000.jpg").write_bytes(b"\xff\xd8 nothing")
    with pytest.raises(DataError, match=r"frame 0 .*not an image"):
        open_source(frames)


def test_ffmpeg_log_is_silenced(zeroed_mp4: Path) -> None:
    """A fresh process reading the damaged mp4 prints our one warning, not FFmpeg's decoder log."""
    code = (
        "import sys, warnings\n"
        "from tdmi.video.source import open_source\n"
        "s = open_source(sys.argv[1], allow_short=True)\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    n = sum(1 for _ in s.frames())\n"
        "print(n, len(w))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("OPENCV_FFMPEG_LOGLEVEL", None)
    done = subprocess.run(
        [sys.executable, "-c", code, str(zeroed_mp4)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "1"]
    assert done.stderr.strip() == "", done.stderr[:2000]
    # With FFmpeg's log asked for, the same read is loud (so the checks above can fail).
    env["OPENCV_FFMPEG_LOGLEVEL"] = "24"
    loud = subprocess.run(
        [sys.executable, "-c", code, str(zeroed_mp4)], capture_output=True, text=True, env=env, timeout=120
    )
    assert (loud.stdout + loud.stderr).count("FFMPEG") > 2  # OpenCV routes FFmpeg's lines to stdout


# -- boxes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box", "words"),
    [
        ([2.0**31, 10, 50, 50], "lies outside the 160x120 frame"),
        ([-500, -500, 100, 100], "lies outside the 160x120 frame"),
        ([0, 0, 1e300, 1e300], f"is more than {MAX_BOX_SCALE:g}x the 160x120 frame"),
        ([0, 0, 3e38, 3e38], f"is more than {MAX_BOX_SCALE:g}x the 160x120 frame"),
        ([0, np.nan, 10, 10], "contains NaN or Inf"),
        ([0, 0, 0, 10], "needs positive width and height"),
    ],
)
def test_check_boxes_refuses(box: list[float], words: str) -> None:
    with pytest.raises(DataError, match=words.replace("(", r"\(")):
        check_boxes(np.array([[1, 1, 20, 20], box]), (120, 160), where=["a.csv:1", "a.csv:2"])
    with pytest.raises(DataError, match=r"a\.csv:2: box"):
        check_boxes(np.array([[1, 1, 20, 20], box]), (120, 160), where=["a.csv:1", "a.csv:2"])


def test_check_boxes_accepts_boxes_overlapping_the_frame() -> None:
    # PoseTrack GT boxes reach outside the image (y < 0, h > height); that is fine.
    check_boxes(np.array([[-50, -54.6, 100, 1092], [150, 110, 40, 40]]), (1080, 1920))
    with pytest.raises(DataError, match="at most 2"):
        check_boxes(np.zeros((3, 4)) + 1, (10, 10), max_boxes=2)


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ("3,1,2147483648,10,50,50,1", "lies outside"),  # was an OpenCV "internal error" in drawing
        ("3,1,5000,5000,50,50,1", "lies outside"),  # was accepted
        ("3,1,0,0,1e300,1e300,1", "is more than"),  # was overflow warnings, no file or line
    ],
)
def test_infer_checks_boxes_naming_file_and_line(
    posetrack18: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str, words: str
) -> None:
    frames = posetrack18 / "videos" / "000001_mpiinew_test"
    boxes = tmp_path / "b.csv"
    boxes.write_text("frame,id,x,y,w,h,score\n1,1,10,10,100,200,1\n2,1,10,10,100,200,1\n" + row + "\n")
    out = tmp_path / "out"
    args = [str(frames), "--config", "tdmi-tiny", "--boxes", str(boxes), "-o", str(out), "--no-overlay"]
    assert run_app(app, args) == 1
    err = capsys.readouterr().err
    assert f"{boxes}:4: box" in err and words in err and "internal error" not in err, err
    assert "overflow" not in err and _no_outputs(out)


# -- output folders and temp names ------------------------------------------------------------------


def test_output_folder_equal_to_the_input_frames_folder_is_refused(
    posetrack18: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = tmp_path / "frames"
    shutil.copytree(posetrack18 / "videos" / "000001_mpiinew_test", frames)
    before = sorted(p.name for p in frames.iterdir())
    for out in (frames, frames / "."):
        assert run_app(app, [str(frames), "--config", "tdmi-tiny", "--full-frame", "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert "would be written into the input folder" in err, err
    assert sorted(p.name for p in frames.iterdir()) == before


def test_overlay_temp_left_by_kill_9_is_swept(tmp_path: Path) -> None:
    """kill -9 while the overlay streams leaves its temp file; the next write in that folder removes it."""
    target = tmp_path / "clip_overlay.mp4"
    code = (
        "import sys, time, numpy as np\n"
        "from pathlib import Path\n"
        "from tdmi.video.writers import overlay_video\n"
        "with overlay_video(Path(sys.argv[1]), 25.0, (64, 48)) as w:\n"
        "    w.write(np.zeros((48, 64, 3), np.uint8))\n"
        "    print(w.path.name, flush=True)\n"
        "    time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        name = proc.stdout.readline().strip()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = tmp_path / name
    assert left.is_file() and name.endswith(".tmp.mp4") and _TMP_FILE.match(name), name
    assert not target.exists()
    assert sweep_stale_temps(tmp_path) == [left] and not left.exists()


# -- the overlay codec ------------------------------------------------------------------------------

_READ_TAGS = {"h264": {"avc1", "h264", "H264"}, "mpeg4": {"mp4v", "FMP4", "MP4V", "fmp4"}}


def test_overlay_codec_is_reported_and_the_file_reads_back(
    posetrack18: Path, tmp_path: Path, predictor: TorchPredictor, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = posetrack18 / "videos" / "000001_mpiinew_test"
    out = infer_video(frames, tmp_path / "o", predictor, full_frame=True, sheet=False)
    codec = out.overlay_codec
    assert codec in OVERLAY_CODECS and out.overlay is not None
    doc = json.loads(out.json.read_text())
    assert doc["tdmi"]["overlay"] == codec.to_dict()
    cap = cv2.VideoCapture(str(out.overlay))
    tag = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace")
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 5 and tag in _READ_TAGS[codec.name], (tag, codec)
    # H.264 is chosen wherever this OpenCV can open it for writing.
    probe = cv2.VideoWriter(str(tmp_path / "p.mp4"), cv2.VideoWriter_fourcc(*"avc1"), 25, (64, 48))
    assert (codec.name == "h264") == probe.isOpened()
    probe.release()
    # The CLI says which codec it used.
    assert (
        run_app(app, [str(frames), "--config", "tdmi-tiny", "--full-frame", "-o", str(tmp_path / "c")]) == 0
    )
    assert f"overlay codec: {codec.label} ({codec.fourcc}" in capsys.readouterr().out


def test_overlay_falls_back_to_the_next_codec(tmp_path: Path) -> None:
    bogus = VideoCodec("QQQQ", "none", "no such codec", True)
    target = tmp_path / "x.mp4"
    with overlay_video(target, 25.0, (64, 48), codecs=(bogus, OVERLAY_CODECS[-1])) as w:
        w.write(np.zeros((48, 64, 3), np.uint8))
        assert w.codec == OVERLAY_CODECS[-1]
    assert target.is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# -- tdmi-infer output is tdmi-eval input -----------------------------------------------------------


def test_infer_with_gt_boxes_is_scored_by_eval(
    posetrack18: Path, tiny_onnx_dynamic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx = tiny_onnx_dynamic
    gt = posetrack18 / "annotations" / "val" / f"{SEQ}.json"
    seq = posetrack18 / "images" / "val" / SEQ
    out = tmp_path / "pred"
    args = [str(seq), "--model", str(onnx), "--boxes", "gt", "--annotations", str(gt), "-o", str(out)]
    assert run_app(app, [*args, "--no-overlay"]) == 0
    doc = json.loads((out / f"{SEQ}.json").read_text())
    truth = json.loads(gt.read_text())
    assert [(i["id"], i["file_name"]) for i in doc["images"]] == [
        (i["id"], i["file_name"]) for i in truth["images"]
    ]
    assert {a["image_id"] for a in doc["annotations"]} == {10094730000}
    capsys.readouterr()
    result = tmp_path / "result.json"
    assert run_app(eval_cli.app, [str(gt), str(out), "--json", str(result)]) == 0, capsys.readouterr().err
    scored = json.loads(result.read_text())
    assert scored["counts"]["pred_persons"] == 2 and scored["counts"]["gt_persons"] == 2
    assert scored["total"] is not None and 0.0 <= scored["total"] <= 100.0


def test_gt_annotation_for_another_video_is_refused(
    posetrack18: Path, tmp_path: Path, predictor: TorchPredictor
) -> None:
    ann = json.loads((posetrack18 / "annotations" / "val" / f"{SEQ}.json").read_text())
    unlabelled = {**ann["images"][0], "id": ann["images"][0]["id"] + 7, "is_labeled": False}
    unlabelled["file_name"] = f"images/val/{SEQ}/000007.jpg"  # frame 7 of a 1-frame input
    ann["images"].append(unlabelled)
    path = tmp_path / "other.json"
    path.write_text(json.dumps(ann))
    with pytest.raises(DataError, match=r"the annotation lists frame\(s\) \[7\]"):
        infer_video(
            posetrack18 / "images" / "val" / SEQ,
            tmp_path / "o",
            predictor,
            boxes="gt",
            annotations=path,
            overlay=False,
            sheet=False,
        )
