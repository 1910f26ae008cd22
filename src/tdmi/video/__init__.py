"""Whole-video pose tracking: read frames, get person tracks, run clips (optionally reusing per-frame
backbone features), write PoseTrack JSON, CSV, an overlay video and a contact sheet."""

from tdmi.video.boxes import BoxTrack, full_frame_tracks, iou_track, load_boxes
from tdmi.video.pipeline import BOX_POLICIES, InferResult, PersonPose, run_video
from tdmi.video.source import VideoSource, open_source

__all__ = [
    "BOX_POLICIES",
    "BoxTrack",
    "InferResult",
    "PersonPose",
    "VideoSource",
    "full_frame_tracks",
    "iou_track",
    "load_boxes",
    "open_source",
    "run_video",
]
