"""Live sources: an MJPEG stream on loopback gives the offline poses of the same frames, online."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tdmi.cli.common import run_app
from tdmi.cli.infer import app
from tdmi.errors import ConfigError, DataError
from tdmi.model import TDMI, get_preset
from tdmi.runtime.torch_backend import TorchPredictor
from tdmi.video.infer import infer_video
from tdmi.video.live import infer_live, is_live, live_name, open_live
from tdmi.video.mjpeg_server import serve_mjpeg

CLIP = "000001_mpiinew_test"


@pytest.fixture(scope="module")
def jpegs(posetrack18: Path) -> list[bytes]:
    files = sorted((posetrack18 / "videos" / CLIP).glob("*.jpg"))
    assert len(files) == 5
    return [f.read_bytes() for f in files]


def _mjpeg_file(jpegs: list[bytes], path: Path) -> Path:
    """The same JPEGs as a raw MJPEG file: OpenCV's FFmpeg decodes it as it decodes the stream."""
    path.write_bytes(b"".join(jpegs))
    return path


def _predictor(num_frames: int) -> TorchPredictor:
    torch.manual_seed(0)
    return TorchPredictor(TDMI(get_preset("tdmi-tiny").replace(num_frames=num_frames)).eval())


def _anns(path: Path) -> list[dict]:
    return json.loads(path.read_text())["annotations"]


def test_live_specs() -> None:
    assert is_live("0") and is_live("rtsp://cam/live") and is_live("http://127.0.0.1:8080/stream.mjpg")
    assert not is_live("video.mp4") and not is_live("frames/") and not is_live("/data/0")
    assert live_name("0") == "camera0"
    assert live_name("http://127.0.0.1:8080/stream.mjpg") == "stream"
    assert live_name("rtsp://user:pw@cam.local:554") == "user_pw_cam.local_554"


@pytest.mark.parametrize("num_frames", [3, 5])
def test_online_equals_offline_and_emits_after_the_window(
    jpegs: list[bytes], tmp_path: Path, num_frames: int
) -> None:
    """Poses equal the offline run's; frame k's poses go out once frame k+delay is in, before k+delay+1.

    The server sends frame i only after the poses of frame i-delay-1 are in the JSON-lines file: a
    pipeline that waited for more frames than its window would stall here (and the test would fail).
    """
    n = 6
    frames = [jpegs[i % 5] for i in range(n)]
    pred = _predictor(num_frames)
    delay = num_frames - 1 - num_frames // 2
    jl = tmp_path / "poses.jsonl"
    waited_out: list[int] = []

    def gate(i: int) -> None:
        deadline = time.monotonic() + 120
        while i - delay - 1 >= 0:
            done = len(jl.read_text().splitlines()) if jl.is_file() else 0
            if done >= i - delay:
                return
            if time.monotonic() > deadline:
                waited_out.append(i)
                return
            time.sleep(0.02)

    with serve_mjpeg(frames, gate=gate) as url:
        live = infer_live(
            url,
            tmp_path / "live",
            pred,
            full_frame=True,
            jsonl=jl,
            overlay=False,
            sheet=False,
            stall_timeout=150,
        )
    assert live.end_reason == "ended" and waited_out == []
    offline = infer_video(
        _mjpeg_file(frames, tmp_path / "stream.mjpeg"), tmp_path / "off", pred, full_frame=True, overlay=False
    )
    a, b = _anns(live.json), _anns(offline.json)
    assert len(a) == len(b) == n
    for x, y in zip(a, b, strict=True):
        assert (x["image_id"], x["track_id"], x["keypoints"]) == (
            y["image_id"],
            y["track_id"],
            y["keypoints"],
        )
    lines = [json.loads(s) for s in jl.read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(n))
    for r, x in zip(lines, a, strict=True):
        kp = np.array(x["keypoints"]).reshape(-1, 3)[:, :2]
        np.testing.assert_allclose(np.array(r["persons"][0]["keypoints"]), kp, atol=1e-3)
    report = live.result.summary()["live"]
    assert report["delay_frames"] == (1 if num_frames == 3 else 2) and report["frames_out"] == n
    assert report["latency_ms_p50"] > 0 and report["latency_ms_p99"] >= report["latency_ms_p50"]


def test_stall_ends_cleanly_keeping_outputs(jpegs: list[bytes], tmp_path: Path) -> None:
    """The server sends 5 frames, then holds the connection silent: the run reports a stall and writes all."""
    with serve_mjpeg(jpegs, fps=None, hold_s=600.0) as url:  # silent until the block ends
        t0 = time.perf_counter()
        live = infer_live(
            url,
            tmp_path / "out",
            _predictor(3),
            full_frame=True,
            jsonl=tmp_path / "p.jsonl",
            stall_timeout=1.0,
        )
        took = time.perf_counter() - t0
    assert live.end_reason == "stalled" and took < 300  # not the server's close, 600 s on
    assert len(_anns(live.json)) == 5 and live.overlay is not None and live.overlay.is_file()
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 5
    assert json.loads(live.json.read_text())["tdmi"]["live"]["end"] == "stalled"


def _ctrl_c_child(folder: str, out: str) -> None:
    """The body of the Ctrl-C test, run in a fresh process (see the test)."""
    import os
    import signal
    import threading

    jpegs = [f.read_bytes() for f in sorted(Path(folder).glob("*.jpg"))]
    tmp_path = Path(out)
    jl = tmp_path / "p.jsonl"

    def interrupt_when_four_out() -> None:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            if jl.is_file() and len(jl.read_text().splitlines()) >= 4:  # frame 4 waits for the end (clamp)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    before = signal.getsignal(signal.SIGINT)
    with serve_mjpeg(jpegs, hold_s=600.0) as url:
        threading.Thread(target=interrupt_when_four_out, daemon=True).start()
        t0 = time.perf_counter()
        live = infer_live(url, tmp_path / "out", _predictor(3), full_frame=True, jsonl=jl, stall_timeout=300)
        took = time.perf_counter() - t0
    assert live.end_reason == "interrupted" and signal.getsignal(signal.SIGINT) is before
    assert took < 250  # did not wait for the 300 s stall timeout (nor for a read blocked that long)
    assert len(_anns(live.json)) == 5 and len(jl.read_text().splitlines()) == 5
    print("CHILD OK")


def test_ctrl_c_ends_the_stream_cleanly(posetrack18: Path, tmp_path: Path) -> None:
    """SIGINT while the stream is open (silent after 5 frames): the run ends with every output written.

    In a fresh process, as a user's run is: a signal sent to the pytest process itself lands wherever
    earlier tests left native libraries (their threads and signal stacks).
    """
    import os
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[2] / "src")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_live; "
        "test_live._ctrl_c_child(sys.argv[2], sys.argv[3])"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(Path(__file__).parent),
            str(posetrack18 / "videos" / CLIP),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert proc.returncode == 0 and "CHILD OK" in proc.stdout, (proc.stdout + proc.stderr)[-3000:]


def test_unreachable_stream_is_one_line_error(tmp_path: Path) -> None:
    with serve_mjpeg([]) as url:
        pass  # the port is closed again
    with pytest.raises(DataError, match="cannot open stream"):
        open_live(url, stall_timeout=1.0)
    with pytest.raises(ConfigError, match="stall-timeout"):
        open_live(url, stall_timeout=0)
    with pytest.raises(DataError, match="--full-frame or --detector"):
        infer_live(url, tmp_path, _predictor(3))


def test_done_when_cli_stream_equals_offline(
    jpegs: list[bytes], tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tdmi-infer http://127.0.0.1:PORT/stream.mjpg --model tiny.onnx --full-frame -o out/ --jsonl -`."""
    model = tiny_onnx
    with serve_mjpeg(jpegs) as url:
        rc = run_app(
            app, [url, "--model", str(model), "--full-frame", "-o", str(tmp_path / "live"), "--jsonl", "-"]
        )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    lines = [json.loads(s) for s in cap.out.splitlines()]  # stdout carries the JSON lines only
    assert [r["frame"] for r in lines] == list(range(5)) and all(r["latency_ms"] > 0 for r in lines)
    assert "latency frame arrival -> poses p50" in cap.err
    src = _mjpeg_file(jpegs, tmp_path / "stream.mjpeg")
    assert run_app(app, [str(src), "--model", str(model), "--full-frame", "-o", str(tmp_path / "off")]) == 0
    a, b = _anns(tmp_path / "live" / "stream.json"), _anns(tmp_path / "off" / "stream.json")
    assert [x["keypoints"] for x in a] == [y["keypoints"] for y in b] and len(a) == 5
    doc = json.loads((tmp_path / "live" / "stream.json").read_text())
    assert doc["tdmi"]["live"]["latency_ms_p50"] > 0 and doc["tdmi"]["live"]["end"] == "ended"
    assert (tmp_path / "live" / "stream_overlay.mp4").is_file()
    # live-only options on a file, and --boxes on a stream, are usage errors (exit 2)
    assert run_app(app, [url, "--model", str(model), "--boxes", "b.csv", "-o", str(tmp_path / "y")]) == 2
    assert (
        run_app(
            app, [str(src), "--model", str(model), "--full-frame", "-o", str(tmp_path / "x"), "--jsonl", "-"]
        )
        == 2
    )


def test_live_detector_tracks_online_as_offline(jpegs: list[bytes], tmp_path: Path) -> None:
    """With a detector, the IoU tracker is fed frame by frame: the same tracks and poses as offline."""
    from tdmi.video.detector import Detector
    from tests.video.test_detector import e2e_detector

    det_path = e2e_detector(tmp_path / "det.onnx")
    pred = _predictor(3)
    with serve_mjpeg(jpegs) as url:
        live = infer_live(
            url, tmp_path / "live", pred, detector=Detector(det_path), overlay=False, sheet=False
        )
    offline = infer_video(
        _mjpeg_file(jpegs, tmp_path / "s.mjpeg"),
        tmp_path / "off",
        pred,
        detector=Detector(det_path),
        overlay=False,
    )
    a, b = _anns(live.json), _anns(offline.json)
    assert len(a) == 15 and {x["track_id"] for x in a} == {0, 1, 2}
    assert [(x["track_id"], x["keypoints"], x["bbox"]) for x in a] == [
        (y["track_id"], y["keypoints"], y["bbox"]) for y in b
    ]
    rep = json.loads(live.json.read_text())["tdmi"]["detector"]
    assert rep["frames"] == 5 and 0 < rep["share"] < 1
