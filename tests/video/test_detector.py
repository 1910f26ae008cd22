"""The person detector: both ONNX layouts (built here with known outputs), letterbox, NMS, tracking."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as onh

from tdmi.cli.common import run_app
from tdmi.cli.infer import app
from tdmi.errors import ConfigError, DataError
from tdmi.video.detector import Detector, decode_e2e, infer_format

CLIP = "000001_mpiinew_test"
SIZE = 640

# e2e: boxes in network-input pixels (x1, y1, x2, y2, score) and their labels
E2E_DETS = np.array(
    [
        [300, 60, 420, 320, 0.8],  # person B
        [10, 10, 50, 50, 0.1],  # person under the score threshold
        [100, 50, 200, 300, 0.9],  # person A
        [400, 100, 500, 200, 0.95],  # class 2 (a car): dropped
        [500, 300, 600, 400, 0.7],  # person reaching into the padding: clipped to the frame
    ],
    dtype=np.float32,
)
E2E_LABELS = np.array([0, 0, 0, 2, 0], dtype=np.int64)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def e2e_detector(path: Path, names: tuple[str, str] = ("dets", "labels")) -> Path:
    """A graph that emits the chosen dets/labels (tied to the input so it is a real dependency)."""
    inp = oh.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])
    nodes = [
        oh.make_node("ReduceMean", ["input"], ["m"], keepdims=0),
        oh.make_node("Mul", ["m", "zero"], ["z"]),
        oh.make_node("Add", ["boxes", "z"], [names[0]]),
        oh.make_node("Identity", ["labels_c"], [names[1]]),
    ]
    inits = [
        onh.from_array(np.float32(0.0), "zero"),
        onh.from_array(E2E_DETS[None], "boxes"),
        onh.from_array(E2E_LABELS[None], "labels_c"),
    ]
    outs = [
        oh.make_tensor_value_info(names[0], TensorProto.FLOAT, [1, len(E2E_DETS), 5]),
        oh.make_tensor_value_info(names[1], TensorProto.INT64, [1, len(E2E_DETS)]),
    ]
    graph = oh.make_graph(nodes, "e2e", [inp], outs, inits)
    return _save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)


CELLS = 20  # 640 / 32
CLASSES = 80


def yolo_head() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Conv weights [84, 3], bias [84] and a grid term [84, 400] with known person peaks."""
    rng = np.random.default_rng(0)
    w = np.zeros((4 + CLASSES, 3), np.float32)
    w[:4] = rng.uniform(-8, 8, (4, 3))  # boxes move with the image
    w[4:] = rng.uniform(0, 0.02, (CLASSES, 3))  # low background class scores from the image
    w[4] = 0.04  # background person scores (mostly the best class): many weak candidates for NMS
    grid = np.zeros((4 + CLASSES, CELLS * CELLS), np.float32)
    ys, xs = np.divmod(np.arange(CELLS * CELLS), CELLS)
    grid[0], grid[1] = xs * 32 + 16, ys * 32 + 16
    grid[2], grid[3] = 90, 180
    peaks = {  # cell -> (class, score)
        (8, 5): (0, 0.9),
        (8, 6): (0, 0.8),  # overlaps (8, 5): suppressed by NMS
        (9, 14): (0, 0.7),
        (4, 15): (0, 0.6),  # far from the others: kept
        (12, 10): (2, 0.95),  # best class is a car: not a person
        (0, 0): (0, 0.85),  # in the top padding: clipped, nothing left of it in the frame
    }
    for (r, c), (cls, s) in peaks.items():
        grid[4 + cls, r * CELLS + c] = s
    grid[4 + 0, 12 * CELLS + 10] = 0.6
    return w, np.zeros(4 + CLASSES, np.float32), grid


def yolo_detector(path: Path, with_meta: bool = True, dynamic: bool = False) -> Path:
    """AveragePool 32 -> 1x1 conv -> reshape [1, 84, 400] + a grid term: a YOLO-shaped raw head."""
    w, b, grid = yolo_head()
    inp = oh.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])
    nodes = [
        oh.make_node("AveragePool", ["images"], ["p"], kernel_shape=[32, 32], strides=[32, 32]),
        oh.make_node("Conv", ["p", "w", "b"], ["c"]),
        oh.make_node("Reshape", ["c", "shape"], ["r"]),
        oh.make_node("Add", ["r", "grid"], ["output0"]),
    ]
    inits = [
        onh.from_array(w[:, :, None, None], "w"),
        onh.from_array(b, "b"),
        onh.from_array(np.array([1, 4 + CLASSES, CELLS * CELLS], np.int64), "shape"),
        onh.from_array(grid[None], "grid"),
    ]
    dims: list[int | str] = [1, "C", "N"] if dynamic else [1, 4 + CLASSES, CELLS * CELLS]
    out = oh.make_tensor_value_info("output0", TensorProto.FLOAT, dims)
    model = oh.make_model(
        oh.make_graph(nodes, "yolo", [inp], [out], inits), opset_imports=[oh.make_opsetid("", 17)]
    )
    if with_meta:
        oh.set_model_props(model, {"task": "detect", "imgsz": f"[{SIZE}, {SIZE}]"})
    return _save(model, path)


# --- an independent reference in numpy -------------------------------------------------------


def ref_letterbox(img: np.ndarray) -> tuple[np.ndarray, float, int, int]:
    h, w = img.shape[:2]
    r = min(SIZE / h, SIZE / w)
    nw, nh = round(w * r), round(h * r)
    top, left = (SIZE - nh) // 2, (SIZE - nw) // 2
    canvas = np.full((SIZE, SIZE, 3), 114, np.uint8)
    canvas[top : top + nh, left : left + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    rgb = canvas[:, :, ::-1].astype(np.float32) / 255.0
    return rgb.transpose(2, 0, 1)[None], r, left, top


def ref_head(x: np.ndarray) -> np.ndarray:
    w, b, grid = yolo_head()
    pooled = x[0].reshape(3, CELLS, 32, CELLS, 32).mean(axis=(2, 4)).reshape(3, -1)
    return (w @ pooled + b[:, None] + grid)[None]


def ref_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = list(np.argsort(-scores, kind="stable"))  # ties: first candidate first
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = []
        for j in order:
            x1, y1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            x2, y2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            a = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            bb = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            if inter / (a + bb - inter) <= thr:
                rest.append(j)
        order = rest
    return keep


def ref_decode(raw: np.ndarray, r: float, left: int, top: int, w: int, h: int, score: float, iou: float):
    p = raw[0].T.astype(np.float64)
    best = p[:, 4:].argmax(1)
    conf = p[np.arange(len(p)), 4 + best]
    sel = (best == 0) & (conf >= score)
    p, conf = p[sel], conf[sel]
    xyxy = np.stack(
        [p[:, 0] - p[:, 2] / 2, p[:, 1] - p[:, 3] / 2, p[:, 0] + p[:, 2] / 2, p[:, 1] + p[:, 3] / 2], 1
    )
    keep = ref_nms(xyxy, conf, iou)
    xyxy, conf = xyxy[keep], conf[keep]
    out = (xyxy - [left, top, left, top]) / r
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    ok = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out[ok], conf[ok]


@pytest.fixture(scope="module")
def frame(posetrack18: Path) -> np.ndarray:
    img = cv2.imread(str(posetrack18 / "videos" / CLIP / "000002.jpg"))
    assert img is not None and img.shape == (720, 1280, 3)
    return img


def test_e2e_layout_keeps_persons_above_threshold(tmp_path: Path, frame: np.ndarray) -> None:
    det = Detector(e2e_detector(tmp_path / "e2e.onnx"), score_thr=0.3)
    assert det.config.format == "e2e" and det.config.input_size == (SIZE, SIZE)
    boxes, scores = det.detect(frame)
    # rtmlib/mmdeploy letterbox: frame placed top-left at ratio 0.5, so frame = input / 0.5
    want = np.array([[200, 100, 400, 600], [600, 120, 840, 640], [1000, 600, 1200, 720]], float)
    np.testing.assert_allclose(boxes, want, atol=1e-4)
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.7], atol=1e-6)
    dets = det.dets(frame)
    np.testing.assert_allclose(dets[0].box, [200, 100, 200, 500], atol=1e-4)  # x, y, w, h
    assert det.frames == 2 and det.seconds > 0


def test_e2e_pre_processing_is_rtmlibs(tmp_path: Path, frame: np.ndarray) -> None:
    det = Detector(e2e_detector(tmp_path / "e2e.onnx"))
    x, lb = det.preprocess(frame)
    assert (
        x.shape == (1, 3, SIZE, SIZE)
        and x.dtype == np.float32
        and (lb.ratio, lb.pad_x, lb.pad_y) == (0.5, 0, 0)
    )
    small = cv2.resize(frame, (640, 360), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(x[0, :, :360].transpose(1, 2, 0), small.astype(np.float32))  # BGR, 0..255
    assert (x[0, :, 360:] == 114).all()


def test_e2e_outputs_named_otherwise_found_by_shape(tmp_path: Path, frame: np.ndarray) -> None:
    det = Detector(e2e_detector(tmp_path / "e.onnx", names=("out_lab", "out_box")), score_thr=0.3)
    # output 0 is called out_lab but holds the [1, N, 5] boxes: the rank decides
    assert det.config.format == "e2e"
    assert len(det.detect(frame)[0]) == 3


def test_yolo_layout_matches_a_numpy_reference_decode(tmp_path: Path, frame: np.ndarray) -> None:
    det = Detector(yolo_detector(tmp_path / "yolo.onnx"), score_thr=0.5, nms_iou=0.45)
    assert det.config.format == "yolo"
    x, lb = det.preprocess(frame)
    xr, r, left, top = ref_letterbox(frame)
    assert (lb.ratio, lb.pad_x, lb.pad_y) == (r, left, top) == (0.5, 0, 140)
    np.testing.assert_array_equal(x, xr)
    raw = det.raw(x)[0]
    np.testing.assert_allclose(raw, ref_head(xr), rtol=1e-5, atol=1e-3)  # the head saw the real image
    boxes, scores = det.detect(frame)
    ref_boxes, ref_scores = ref_decode(raw, r, left, top, 1280, 720, 0.5, 0.45)
    np.testing.assert_allclose(boxes, ref_boxes, atol=1e-3)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    # the planted peaks: 3 persons survive (one suppressed by NMS, the car and the padding box gone)
    assert len(boxes) == 3
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.6], atol=0.121)
    # lower threshold: more candidates, still equal to the reference
    det2 = Detector(tmp_path / "yolo.onnx", score_thr=0.05, nms_iou=0.3)
    b2, s2 = det2.detect(frame)
    rb2, rs2 = ref_decode(raw, r, left, top, 1280, 720, 0.05, 0.3)
    assert len(b2) > 3
    np.testing.assert_allclose(b2, rb2, atol=1e-3)
    np.testing.assert_allclose(s2, rs2, atol=1e-6)


def test_layout_needs_the_flag_when_the_graph_does_not_say(tmp_path: Path, frame: np.ndarray) -> None:
    path = yolo_detector(tmp_path / "anon.onnx", with_meta=False, dynamic=True)
    # the graph declares [1, C, N], but ONNX Runtime infers [1, 84, 400] through it: that says YOLO
    assert Detector(path).config.format == "yolo"
    assert len(Detector(path, format="yolo", score_thr=0.5).detect(frame)[0]) == 3
    with pytest.raises(DataError, match="two outputs"):
        Detector(path, format="e2e")
    assert infer_format([("output0", [1, 84, 8400])], {}) == "yolo"
    assert infer_format([("dets", [1, "N", 5]), ("labels", [1, "N"])], {}) == "e2e"
    assert infer_format([("y", [1, "C", "N"])], {}) is None


def test_bad_detector_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        Detector(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a graph ONNX Runtime can load"):
        Detector(tmp_path / "junk.onnx")
    with pytest.raises(ConfigError, match="--detector-format"):
        Detector(e2e_detector(tmp_path / "e.onnx"), format="ssd")
    with pytest.raises(ConfigError, match="TensorRT detector engines"):
        Detector(tmp_path / "det.engine")
    with pytest.raises(DataError, match=r"\[1, N, 5\]"):
        decode_e2e(np.zeros((1, 3, 4), np.float32), np.zeros((1, 3)), 0.3, 10)


def test_done_when_cli_tracks_detected_people(posetrack18: Path, tmp_path: Path, tiny_onnx: Path) -> None:
    """`tdmi-infer video.mp4 --model tiny.onnx --detector det.onnx -o out/` tracks the detected people."""
    video = posetrack18 / "videos" / CLIP / f"{CLIP}.mp4"
    det = e2e_detector(tmp_path / "det.onnx")
    out = tmp_path / "out"
    args = [str(video), "--model", str(tiny_onnx), "--detector", str(det), "-o", str(out), "--no-overlay"]
    assert run_app(app, args) == 0
    doc = json.loads((out / f"{CLIP}.json").read_text())
    anns = doc["annotations"]
    assert len(anns) == 5 * 3 and {a["track_id"] for a in anns} == {0, 1, 2}
    by_track = {t: [a["bbox"] for a in anns if a["track_id"] == t] for t in (0, 1, 2)}
    assert by_track[0] == [[200.0, 100.0, 200.0, 500.0]] * 5  # x, y, w, h of person A on every frame
    report = doc["tdmi"]["detector"]
    assert report["format"] == "e2e" and report["frames"] == 5
    assert report["ms_per_frame"] > 0 and report["pose_ms_per_frame"] > 0 and 0 < report["share"] < 1
    assert doc["tdmi"]["persons"] == 3
    # both box sources at once is a usage error
    bad = [*args, "--full-frame"]
    assert run_app(app, bad) != 0
