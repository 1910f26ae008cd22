"""Value sets of CLI options whose checking modules import numpy (the runtime, the video pipeline,
the PoseTrack reader): declared here, in the numpy-free ground, so that ``tdmi-infer -h`` and
option errors stay light. Each is the one home of its values; the modules that check them import
them from here.
"""

from __future__ import annotations

from typing import Literal, get_args

# Which engine runs a model file (tdmi.runtime.load); default: from the file's suffix.
Backend = Literal["torch", "onnxruntime", "openvino", "tensorrt"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)

# Which box crops each frame of a clip (tdmi.video.pipeline): the key frame's box for the whole
# clip, each frame's own box, or a centred moving average of the track's boxes.
BoxPolicy = Literal["key", "frame", "smoothed"]
BOX_POLICIES: tuple[BoxPolicy, ...] = get_args(BoxPolicy)

# A person detector graph's layout (tdmi.video.detector): ultralytics YOLO ([1, 4+classes, N]) or
# the mmdeploy/rtmlib end-to-end one (dets [1, N, 5] + labels [1, N]).
DetectorFormat = Literal["yolo", "e2e"]
DETECTOR_FORMATS: tuple[DetectorFormat, ...] = get_args(DetectorFormat)

# A clip's neighbour frame missing on disk (partial PoseTrack downloads): refuse, or use the nearest.
MissingFrames = Literal["error", "nearest"]
MISSING_FRAMES: tuple[MissingFrames, ...] = get_args(MissingFrames)
