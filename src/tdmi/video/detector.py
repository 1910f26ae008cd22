"""A person detector from an ONNX file, in the two layouts users already have.

* ``yolo``: ultralytics' YOLO export, one output ``[1, 4 + classes, N]`` of raw candidates
  (cx, cy, w, h in input pixels, then per-class scores). Pre-processing is ultralytics' letterbox:
  resize keeping the aspect, pad the borders evenly with grey 114, RGB, divide by 255. The boxes
  need NMS (OpenCV's ``cv2.dnn.NMSBoxes``).
* ``e2e``: mmdeploy / rtmlib end-to-end exports (YOLOX, RTMDet with the NMS in the graph): ``dets
  [1, N, 5]`` (x1, y1, x2, y2, score) and ``labels [1, N]``. Pre-processing follows rtmlib's YOLOX:
  resize keeping the aspect, pad bottom/right with 114, BGR, 0..255 float (no normalisation).

Only the person class (0) is kept, above a score threshold; boxes are mapped back to the frame and
clipped to it. The detections feed :func:`tdmi.video.boxes.iou_track`. Torch-free: numpy, ONNX
Runtime (the project's session factory) and OpenCV.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tdmi.errors import ConfigError, DataError
from tdmi.spec.choices import DETECTOR_FORMATS, DetectorFormat
from tdmi.video.boxes import Det

PERSON_CLASS = 0
PAD_VALUE = 114
DEFAULT_INPUT_SIZE = (640, 640)  # (H, W) when the graph's input is dynamic and it carries no imgsz


@dataclass
class DetectorConfig:
    """How detections are made; recorded in the run JSON."""

    path: str
    format: DetectorFormat
    input_size: tuple[int, int]  # (H, W) of the network input
    score_thr: float = 0.3
    nms_iou: float = 0.45
    max_det: int = 100
    backend: str = "onnxruntime"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


@dataclass
class Letterbox:
    """Where the frame landed in the network input: ``input = frame * ratio + (pad_x, pad_y)``."""

    ratio: float
    pad_x: float
    pad_y: float

    def to_frame(self, xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
        out = np.asarray(xyxy, dtype=np.float64).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.ratio
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.ratio
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
        return out


def letterbox_yolo(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """ultralytics' LetterBox (auto=False, centred): ``[1, 3, H, W]`` float32 RGB in 0..1."""
    import cv2

    h0, w0 = image.shape[:2]
    th, tw = size
    r = min(th / h0, tw / w0)
    nw, nh = round(w0 * r), round(h0 * r)
    dw, dh = (tw - nw) / 2, (th - nh) / 2
    img = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != (w0, h0) else image
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    x = img[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    return np.ascontiguousarray(x), Letterbox(r, float(left), float(top))


def letterbox_e2e(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """rtmlib's YOLOX pre-processing: top-left placed, padded with 114, BGR, 0..255 float32."""
    import cv2

    h0, w0 = image.shape[:2]
    th, tw = size
    r = min(th / h0, tw / w0)
    nw, nh = int(w0 * r), int(h0 * r)
    padded = np.full((th, tw, 3), PAD_VALUE, dtype=np.uint8)
    padded[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    x = padded.transpose(2, 0, 1)[None].astype(np.float32)
    return np.ascontiguousarray(x), Letterbox(r, 0.0, 0.0)


def decode_yolo(
    raw: np.ndarray, score_thr: float, nms_iou: float, max_det: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[1, 4+C, N]`` -> person boxes xyxy (input pixels) and scores after NMS, best first.

    As ultralytics does (one label per candidate): a candidate is a person when class 0 is its best
    class, with that class's score.
    """
    import cv2

    if raw.ndim != 3 or raw.shape[0] != 1 or raw.shape[1] < 5:
        raise DataError(f"a YOLO detector output must be [1, 4+classes, N], got {list(raw.shape)}")
    pred = raw[0].astype(np.float32).T  # [N, 4+C]
    cls = pred[:, 4:]
    best = cls.argmax(axis=1)
    conf = cls[np.arange(len(cls)), best]
    keep = (best == PERSON_CLASS) & (conf >= score_thr)
    pred, conf = pred[keep], conf[keep]
    if not len(pred):
        return np.zeros((0, 4)), np.zeros(0)
    cx, cy, w, h = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
    xywh = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    # OpenCV keeps scores strictly above its threshold: ours (>=) was applied above. Its top_k caps
    # the candidates before NMS, not the survivors, so the cap is applied after.
    below = float(np.nextafter(np.float32(score_thr), np.float32(-1.0)))
    kept = cv2.dnn.NMSBoxes(xywh.tolist(), conf.tolist(), below, float(nms_iou))
    idx = np.asarray(kept, dtype=np.int64).reshape(-1)[:max_det]
    xyxy = np.concatenate([xywh[idx, :2], xywh[idx, :2] + xywh[idx, 2:]], axis=1)
    return xyxy.astype(np.float64), conf[idx].astype(np.float64)


def decode_e2e(
    dets: np.ndarray, labels: np.ndarray, score_thr: float, max_det: int
) -> tuple[np.ndarray, np.ndarray]:
    """``dets [1, N, 5]`` + ``labels [1, N]`` -> person boxes xyxy (input pixels) and scores, best first."""
    if dets.ndim != 3 or dets.shape[0] != 1 or dets.shape[2] != 5:
        raise DataError(f"an end-to-end detector's dets must be [1, N, 5], got {list(dets.shape)}")
    if labels.shape[:2] != dets.shape[:2]:
        raise DataError(f"labels {list(labels.shape)} do not match dets {list(dets.shape)}: expected [1, N]")
    d = dets[0].astype(np.float64)
    lab = labels.reshape(labels.shape[0], labels.shape[1])[0]
    keep = (lab.astype(np.int64) == PERSON_CLASS) & (d[:, 4] >= score_thr)
    d = d[keep]
    order = np.argsort(-d[:, 4], kind="stable")[:max_det]
    return d[order, :4], d[order, 4]


def _dim(v: Any) -> int | None:
    return v if isinstance(v, int) and v > 0 else None


def _meta_imgsz(meta: dict[str, str]) -> tuple[int, int] | None:
    """ultralytics writes ``imgsz`` ('[640, 640]') into the ONNX metadata."""
    raw = meta.get("imgsz")
    if raw is None:
        return None
    try:
        v = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return None
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return (int(v[0]), int(v[1]))
    return None


def infer_format(outputs: list[tuple[str, list[Any]]], meta: dict[str, str]) -> DetectorFormat | None:
    """``yolo`` / ``e2e`` from output names and shapes (and ultralytics metadata), or None if unsure."""
    names = [n.lower() for n, _ in outputs]
    if len(outputs) == 2 and "dets" in names and "labels" in names:
        return "e2e"
    if len(outputs) == 2:
        (_, a), (_, b) = outputs
        if len(a) == 3 and len(b) == 2 and a[2] == 5:
            return "e2e"
    if len(outputs) == 1 and len(outputs[0][1]) == 3:
        if meta.get("task") == "detect" or "ultralytics" in meta.get("author", "").lower():
            return "yolo"
        c, n = _dim(outputs[0][1][1]), _dim(outputs[0][1][2])
        if c is not None and c >= 5 and (n is None or n > c):
            return "yolo"
    return None


class Detector:
    """Person boxes per frame from a detector ONNX, on ONNX Runtime (CPU)."""

    def __init__(
        self,
        path: str | Path,
        *,
        format: DetectorFormat | None = None,
        score_thr: float = 0.3,
        nms_iou: float = 0.45,
        max_det: int = 100,
        threads: int | None = None,
    ) -> None:
        from tdmi.errors import ExportError
        from tdmi.runtime.onnxruntime_backend import ort_session

        p = Path(path)
        if p.suffix.lower() == ".engine":
            raise ConfigError(
                f"--detector {p}: TensorRT detector engines are not supported yet; give the detector's .onnx "
                "(it runs on ONNX Runtime)"
            )
        if not p.is_file():
            raise DataError(f"--detector {p} not found: give a detector .onnx (YOLO or mmdeploy end-to-end)")
        if format is not None and format not in DETECTOR_FORMATS:
            raise ConfigError(
                f"--detector-format must be one of {', '.join(DETECTOR_FORMATS)}, got {format!r}"
            )
        if not 0.0 <= score_thr <= 1.0 or not 0.0 < nms_iou <= 1.0 or max_det < 1:
            raise ConfigError(
                f"detector thresholds out of range: score {score_thr} (0..1), NMS IoU {nms_iou} (0..1], "
                f"max detections {max_det} (>= 1)"
            )
        try:
            self.session, _ = ort_session(p, "cpu", threads, what="--detector")
        except ExportError as e:
            raise DataError(f"--detector {p} is not a graph ONNX Runtime can load: {e}") from None
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise DataError(
                f"--detector {p} must take one image input [1, 3, H, W], has "
                f"{[(i.name, i.shape) for i in inputs]}"
            )
        self._in_name = inputs[0].name
        # the output shapes as ONNX Runtime reports them (a symbolic dimension is its name, unknown: "?")
        outs = [
            (o.name, [d if isinstance(d, (int, str)) else "?" for d in o.shape])
            for o in self.session.get_outputs()
        ]
        found = infer_format(outs, meta)
        if format is None and found is None:
            raise ConfigError(
                f"--detector {p}: cannot tell its layout from outputs {outs}: pass --detector-format yolo "
                "([1, 4+classes, N]) or e2e (dets [1, N, 5] + labels [1, N])"
            )
        fmt = format or found
        assert fmt is not None  # refused above when neither is known
        if fmt == "e2e" and len(outs) != 2:
            raise DataError(
                f"--detector {p}: an e2e detector has two outputs (dets, labels), this has {outs}"
            )
        if fmt == "yolo" and len(outs) != 1:
            raise DataError(
                f"--detector {p}: a YOLO detector has one output [1, 4+classes, N], this has {outs}"
            )
        h, w = _dim(inputs[0].shape[2]), _dim(inputs[0].shape[3])
        size = (h, w) if h and w else (_meta_imgsz(meta) or DEFAULT_INPUT_SIZE)
        names = [n.lower() for n, _ in outs]
        # e2e: dets first, labels second (by name when named so, else by rank)
        if fmt == "e2e":
            if "dets" in names and "labels" in names:
                self._out_order = [names.index("dets"), names.index("labels")]
            else:
                self._out_order = [0, 1] if len(outs[0][1]) == 3 else [1, 0]
        self._out_names = [n for n, _ in outs]
        self._in_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        self.config = DetectorConfig(str(p), fmt, size, score_thr, nms_iou, max_det)
        self.seconds = 0.0  # time spent detecting (pre-process, network, decode): the run reports its share
        self.frames = 0

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        fn = letterbox_yolo if self.config.format == "yolo" else letterbox_e2e
        return fn(image, self.config.input_size)

    def raw(self, x: np.ndarray) -> list[np.ndarray]:
        """The network's outputs for one pre-processed input, as numpy."""
        return [np.asarray(o) for o in self.session.run(None, {self._in_name: x.astype(self._in_dtype)})]

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes in frame pixels, xyxy ``[K, 4]``, and their scores ``[K]``, best first."""
        t0 = time.perf_counter()
        x, lb = self.preprocess(image)
        outs = self.raw(x)
        c = self.config
        if c.format == "yolo":
            xyxy, scores = decode_yolo(outs[0], c.score_thr, c.nms_iou, c.max_det)
        else:
            xyxy, scores = decode_e2e(
                outs[self._out_order[0]], outs[self._out_order[1]], c.score_thr, c.max_det
            )
        boxes = lb.to_frame(xyxy, image.shape[1], image.shape[0])
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        self.seconds += time.perf_counter() - t0
        self.frames += 1
        return boxes[ok], scores[ok]

    def dets(self, image: np.ndarray) -> list[Det]:
        """The frame's persons as untracked :class:`Det` (x, y, w, h) for the IoU tracker."""
        boxes, scores = self.detect(image)
        return [
            Det(np.array([b[0], b[1], b[2] - b[0], b[3] - b[1]]), float(s))
            for b, s in zip(boxes, scores, strict=True)
        ]

    def detect_frames(self, frames: Iterator[np.ndarray]) -> dict[int, list[Det]]:
        """Detections on every frame (frames with nobody are absent)."""
        out: dict[int, list[Det]] = {}
        for i, img in enumerate(frames):
            found = self.dets(img)
            if found:
                out[i] = found
        return out

    def timing(self) -> dict[str, Any]:
        """What the run reports: the detector's config and seconds per frame."""
        per = self.seconds / self.frames if self.frames else 0.0
        return {
            **self.config.to_dict(),
            "frames": self.frames,
            "seconds": round(self.seconds, 4),
            "ms_per_frame": round(1000 * per, 3),
        }
