"""PoseTrack evaluation: poseval-exact multi-person keypoint AP and PoseTrack18 prediction files."""

from tdmi.eval.io import evaluate, frame_image_entry, write_predictions
from tdmi.eval.poseval import (
    DIST_THRESH,
    GROUPS,
    EvalResult,
    compute_rpc,
    evaluate_frames,
    format_table,
    voc_ap,
)

__all__ = [
    "DIST_THRESH",
    "GROUPS",
    "EvalResult",
    "compute_rpc",
    "evaluate",
    "evaluate_frames",
    "format_table",
    "frame_image_entry",
    "voc_ap",
    "write_predictions",
]
