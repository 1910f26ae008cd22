"""``tdmi-infer`` as a library call: input -> tracks -> poses -> JSON, CSV, overlay video, contact sheet."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tdmi.errors import DataError
from tdmi.spec.choices import BoxPolicy
from tdmi.spec.decoding import Refine
from tdmi.utils import check_outputs
from tdmi.video.boxes import (
    BoxTrack,
    annotation_images,
    check_annotation_frames,
    check_dets,
    full_frame_tracks,
    load_boxes,
    make_tracks,
)
from tdmi.video.pipeline import InferResult, run_video
from tdmi.video.source import VideoSource, open_source
from tdmi.video.writers import (
    ContactSheet,
    VideoCodec,
    drawing_sink,
    overlay_video,
    write_png,
    write_tables,
)


@dataclass
class InferOutputs:
    """What one run wrote (``overlay``/``sheet``: None when not asked for) and its result."""

    result: InferResult
    json: Path
    csv: Path
    overlay: Path | None
    sheet: Path | None
    overlay_codec: VideoCodec | None = None

    def written(self) -> list[Path]:
        """The files in the order the CLI reports them."""
        return [self.json, self.csv] + [p for p in (self.overlay, self.sheet) if p is not None]


def output_paths(out_dir: Path, name: str) -> dict[str, Path]:
    return {
        "json": out_dir / f"{name}.json",
        "csv": out_dir / f"{name}.csv",
        "overlay": out_dir / f"{name}_overlay.mp4",
        "sheet": out_dir / f"{name}_sheet.png",
    }


class RunFiles:
    """The outputs of one pass, stored video or live stream: the overlay streams (atomically) while
    frames are drawn, the tables and the contact sheet are written once the pass has succeeded."""

    def __init__(
        self, stack: contextlib.ExitStack, paths: dict[str, Path], source: Any, overlay: bool, sheet: bool
    ) -> None:
        self.paths = paths
        size = (source.width, source.height)
        self.writer = (
            stack.enter_context(overlay_video(paths["overlay"], source.fps, size)) if overlay else None
        )
        self.contact = ContactSheet() if sheet else None
        self.draw = drawing_sink(self.writer, self.contact)  # the pipeline sink: draws each frame once

    def finish(
        self,
        result: InferResult,
        name: str,
        frame_names: list[str],
        gt_images: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write the tables and the sheet; the fields of the run's :class:`InferOutputs`."""
        write_tables(result, self.paths["json"], self.paths["csv"], name, frame_names, gt_images, extra)
        if self.contact is not None:
            write_png(self.paths["sheet"], self.contact.render())
        return {
            "result": result,
            "json": self.paths["json"],
            "csv": self.paths["csv"],
            "overlay": self.paths["overlay"] if self.writer is not None else None,
            "sheet": self.paths["sheet"] if self.contact is not None else None,
            "overlay_codec": self.writer.codec if self.writer is not None else None,
        }


def check_box_source(full_frame: bool, boxes: Any, detector: Any) -> None:
    """Exactly one source of person boxes (stored videos; one video or a batch)."""
    if sum((full_frame, boxes is not None, detector is not None)) != 1:
        raise DataError(
            "say where person boxes come from: --full-frame, --boxes FILE.json|FILE.csv|gt, or "
            "--detector DET.onnx (one of them)"
        )


def build_tracks(
    source: VideoSource,
    *,
    full_frame: bool = False,
    boxes: str | Path | None = None,
    annotations: str | Path | None = None,
    tracker: bool = True,
    score_thr: float = 0.3,
    iou_threshold: float = 0.3,
    detector: Any | None = None,
) -> list[BoxTrack]:
    check_box_source(full_frame, boxes, detector)
    if full_frame:
        return full_frame_tracks(source.width, source.height)
    if detector is not None:
        return detector_tracks(source, detector, tracker=tracker, iou_threshold=iou_threshold)
    assert boxes is not None  # check_box_source: the one source left
    dets = load_boxes(boxes, annotations, score_thr, source.name)
    check_dets(dets, source.width, source.height)
    return make_tracks(dets, tracker=tracker, iou_threshold=iou_threshold)


def detector_tracks(
    source: VideoSource, detector: Any, *, tracker: bool = True, iou_threshold: float = 0.3
) -> list[BoxTrack]:
    """A detection pass over the whole input (a :class:`tdmi.video.detector.Detector`), then tracks."""
    dets = detector.detect_frames(source.frames())
    if not dets:
        raise DataError(
            f"the detector found no person in {source.name} ({detector.frames} frames) at score >= "
            f"{detector.config.score_thr}: lower --det-score, or check --detector-format"
        )
    return make_tracks(dets, tracker=tracker, iou_threshold=iou_threshold)


def detector_report(detector: Any, result: InferResult, inline: bool = False) -> dict[str, Any]:
    """The detector's time per frame beside the pose pass's (decode, crops, pose model, decoding).

    ``inline``: the detector ran inside the pose pass (live sources), so its time is taken out of it.
    """
    det_ms = 1000 * detector.seconds / max(detector.frames, 1)
    pose_s = result.wall_s - (detector.seconds if inline else 0.0)
    pose_ms = 1000 * pose_s / max(result.num_frames, 1)
    return {
        **detector.timing(),
        "pose_ms_per_frame": round(pose_ms, 3),
        "share": round(det_ms / (det_ms + pose_ms), 4) if det_ms + pose_ms > 0 else 0.0,
    }


def infer_video(
    input_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    predictor: Any,
    *,
    frame_predictor: Any | None = None,
    full_frame: bool = False,
    boxes: str | Path | None = None,
    annotations: str | Path | None = None,
    tracker: bool = True,
    score_thr: float = 0.3,
    box_policy: BoxPolicy = "key",
    refine: Refine = "quarter",
    overlay: bool = True,
    sheet: bool = True,
    fps: float | None = None,
    allow_short: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    detector: Any | None = None,
) -> InferOutputs:
    """Run the whole pipeline; every output is written atomically and only when the run succeeds.

    ``allow_short``: a video that decodes fewer frames than its container declares is processed
    with a warning instead of refused. With PoseTrack ground-truth boxes the JSON carries the
    annotation's image ids and file names, so ``tdmi-eval`` scores it against that annotation.
    """
    source = open_source(input_path, fps, allow_short=allow_short)
    paths = _checked_paths(Path(out_dir), source, input_path)
    tracks = build_tracks(
        source,
        full_frame=full_frame,
        boxes=boxes,
        annotations=annotations,
        tracker=tracker,
        score_thr=score_thr,
        detector=detector,
    )
    gt_images = annotation_images(boxes, annotations) if boxes is not None else None
    with contextlib.ExitStack() as stack:
        files = RunFiles(stack, paths, source, overlay, sheet)
        result = run_video(
            source,
            tracks,
            predictor,
            frame_predictor=frame_predictor,
            box_policy=box_policy,
            refine=refine,
            sink=files.draw,
            progress=(lambda done: progress(done, source.num_frames)) if progress else None,
        )
        writer = files.writer
        if writer is not None and writer.frames_written != result.num_frames:
            raise DataError(f"overlay has {writer.frames_written} frames, the input {result.num_frames}")
        if detector is not None:
            result.extra["detector"] = detector_report(detector, result)
        names = [f"{source.name}/{f.name}" for f in source.files] if source.kind == "frames" else []
        if gt_images is not None:
            check_annotation_frames(gt_images, max(result.num_frames, source.num_frames or 0))
        extra = {"overlay": writer.codec.to_dict()} if writer is not None else {}
        return InferOutputs(**files.finish(result, source.name, names, gt_images, extra))


def _checked_paths(out: Path, source: VideoSource, input_path: str | os.PathLike[str]) -> dict[str, Path]:
    """The run's output files, each checked (writable, not the input) before any work."""
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} is a file: -o takes a folder")
    paths = output_paths(out, source.name)
    check_outputs(
        {f"-o ({kind})": p for kind, p in paths.items()},
        {"SOURCE": input_path} if source.kind == "video" else {},
        input_dirs={"SOURCE": input_path} if source.kind == "frames" else None,
        force_option="",
    )
    return paths
