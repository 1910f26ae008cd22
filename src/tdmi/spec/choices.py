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

# A clip's neighbour frame missing on disk (partial PoseTrack downloads): refuse, or use the nearest.
MissingFrames = Literal["error", "nearest"]
MISSING_FRAMES: tuple[MissingFrames, ...] = get_args(MissingFrames)
