"""The toolkit's built-in sample clip: a procedurally drawn walking stick figure on a textured background.

Benchmarks, export checks and calibration smoke tests need realistic-shaped input without shipping or
downloading video. Everything here is drawn with OpenCV from a seeded generator, so the same arguments
give byte-identical frames on every call (another OpenCV build may differ in anti-aliased edge pixels).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from tdmi.data.transforms import CropInfo, _as_size, crop_clip, key_frame_position
from tdmi.errors import DataError
from tdmi.spec.joints import NUM_JOINTS

__all__ = [
    "SampleClipInfo",
    "SampleVideo",
    "moving_figure_video",
    "sample_clip",
    "sample_clips",
    "sample_video",
]

# Limbs drawn between joints (PoseTrack order); (a, b, side) with side 0 centre, 1 left, 2 right.
_LIMBS: tuple[tuple[int, int, int], ...] = (
    (5, 7, 1),
    (7, 9, 1),
    (6, 8, 2),
    (8, 10, 2),
    (11, 13, 1),
    (13, 15, 1),
    (12, 14, 2),
    (14, 16, 2),
    (1, 0, 0),
)
# BGR colours: the figure's left side differs from its right so a horizontal flip is visible.
_SIDE_COLOURS: tuple[tuple[int, int, int], ...] = ((40, 40, 200), (40, 190, 60), (200, 120, 30))
_TORSO_COLOUR = (60, 60, 150)
_SKIN_COLOUR = (120, 170, 225)


class SampleVideo(NamedTuple):
    """BGR uint8 frames, the key frame's person box [x, y, w, h], keypoints [T, 17, 3] (x, y, visible)."""

    frames: list[np.ndarray]
    box_xywh: np.ndarray
    keypoints: np.ndarray


@dataclass(frozen=True, eq=False)
class SampleClipInfo:
    """How a sample clip was cut, and the figure's true key-frame keypoints [17, 3] in image pixels."""

    crop: CropInfo
    keypoints: np.ndarray
    frame_index: int


@dataclass(frozen=True)
class _Pose:
    x: float  # pelvis centre, image pixels
    y: float
    height: float  # head top to ankles, pixels
    phase: float  # walking cycle, radians
    phase_step: float  # per frame
    dx: float  # pelvis motion per frame, pixels
    lean: float  # torso tilt, radians
    arm_lift: float  # extra shoulder abduction, radians


def _background(size: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth colour noise plus a tile pattern: texture for the network, cheap to draw."""
    h, w = size
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 215, size=(max(2, h // 48), max(2, w // 48), 3), dtype=np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    tile = max(4, min(h, w) // 24)
    checker = np.indices(((h + tile - 1) // tile, (w + tile - 1) // tile)).sum(axis=0) % 2
    pattern = cv2.resize(
        (checker * 24).astype(np.uint8), None, fx=tile, fy=tile, interpolation=cv2.INTER_NEAREST
    )
    img = cv2.add(img, cv2.cvtColor(pattern[:h, :w], cv2.COLOR_GRAY2BGR))
    ground = int(h * 0.8)
    img[ground:] = (img[ground:].astype(np.uint16) * 3 // 5).astype(np.uint8)
    return img


def _skeleton(pose: _Pose, t: int) -> np.ndarray:
    """17 joints (x, y) of the figure at frame ``t``: forward kinematics of a walking cycle."""
    u = pose.height
    phase = pose.phase + pose.phase_step * t
    swing = 0.3 * math.sin(phase)
    pelvis = np.array([pose.x + pose.dx * t, pose.y + 0.01 * u * abs(math.sin(phase))])

    def ray(origin: np.ndarray, length: float, angle: float) -> np.ndarray:
        # angle 0 points down, positive angles towards image +x
        return origin + length * np.array([math.sin(angle), math.cos(angle)])

    up = pose.lean + math.pi  # torso points up
    neck = ray(pelvis, 0.30 * u, up)
    head_top = ray(neck, 0.20 * u, up)
    nose = ray(neck, 0.09 * u, up + 0.15)
    across = np.array([math.cos(pose.lean), math.sin(pose.lean)])  # towards the figure's left (image +x)
    ears = (ray(neck, 0.12 * u, up) + 0.05 * u * across, ray(neck, 0.12 * u, up) - 0.05 * u * across)
    shoulders = (neck + 0.12 * u * across, neck - 0.12 * u * across)
    hips = (pelvis + 0.09 * u * across, pelvis - 0.09 * u * across)

    joints = np.zeros((NUM_JOINTS, 2))
    joints[0], joints[1], joints[2] = nose, neck, head_top
    joints[3], joints[4] = ears
    for side, sign in ((0, 1.0), (1, -1.0)):
        # the figure's left arm swings against its left leg
        leg = swing * (1 if side == 0 else -1)
        arm = -0.8 * leg
        shoulder, hip = shoulders[side], hips[side]
        elbow = ray(shoulder, 0.17 * u, pose.lean + arm + sign * (0.15 + pose.arm_lift))
        wrist = ray(elbow, 0.15 * u, pose.lean + arm + sign * (0.15 + pose.arm_lift) - 0.5 * abs(arm))
        knee = ray(hip, 0.24 * u, leg + sign * 0.05)
        ankle = ray(knee, 0.24 * u, leg + sign * 0.05 - 0.6 * max(0.0, -leg))
        joints[5 + side], joints[7 + side], joints[9 + side] = shoulder, elbow, wrist
        joints[11 + side], joints[13 + side], joints[15 + side] = hip, knee, ankle
    return joints


def _draw_figure(img: np.ndarray, joints: np.ndarray, height: float) -> None:
    thick = max(2, round(0.045 * height))
    p = np.rint(joints).astype(np.int32)
    cv2.fillConvexPoly(img, p[[5, 6, 12, 11]], _TORSO_COLOUR, lineType=cv2.LINE_AA)
    for a, b, side in _LIMBS:
        cv2.line(img, tuple(p[a]), tuple(p[b]), _SIDE_COLOURS[side], thick, lineType=cv2.LINE_AA)
    head_c = (joints[1] + joints[2]) / 2
    axis = (max(2, round(0.065 * height)), max(2, round(0.095 * height)))
    ang = math.degrees(math.atan2(joints[2, 0] - joints[1, 0], joints[1, 1] - joints[2, 1]))
    centre = (round(head_c[0]), round(head_c[1]))
    cv2.ellipse(img, centre, axis, ang, 0, 360, _SKIN_COLOUR, -1, lineType=cv2.LINE_AA)
    cv2.circle(img, tuple(p[0]), max(1, thick // 2), (30, 30, 30), -1, lineType=cv2.LINE_AA)
    for j in range(5, NUM_JOINTS):
        cv2.circle(img, tuple(p[j]), max(1, thick // 2 + 1), (235, 235, 235), -1, lineType=cv2.LINE_AA)


def _figure_box(joints: np.ndarray, height: float, size: tuple[int, int]) -> np.ndarray:
    """Person box like a detector's: keypoint extent enlarged 1.2x plus the drawn limb/joint thickness."""
    lo, hi = joints.min(axis=0), joints.max(axis=0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * 1.2 + 0.04 * height
    lo, hi = np.maximum(centre - half, 0), np.minimum(centre + half, (size[1] - 1, size[0] - 1))
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], dtype=np.float32)


def _default_pose(size: tuple[int, int]) -> _Pose:
    h, w = size
    return _Pose(
        x=w * 0.5,
        y=h * 0.52,
        height=h * 0.62,
        phase=0.3,
        phase_step=0.35,
        dx=w * 0.004,
        lean=0.04,
        arm_lift=0.4,
    )


def _random_pose(size: tuple[int, int], rng: np.random.Generator, num_frames: int) -> _Pose:
    h, w = size
    height = h * rng.uniform(0.35, 0.7)
    dx = w * rng.uniform(-0.008, 0.008)
    margin = 0.45 * height + abs(dx) * num_frames
    x = rng.uniform(min(margin, w / 2), max(w - margin, w / 2))
    y = rng.uniform(0.52 * height, h - 0.5 * height)
    return _Pose(
        x=x,
        y=y,
        height=height,
        phase=rng.uniform(0, 2 * math.pi),
        phase_step=rng.uniform(0.2, 0.5),
        dx=dx,
        lean=rng.uniform(-0.15, 0.15),
        arm_lift=rng.uniform(0.0, 1.2),
    )


def _render(pose: _Pose, num_frames: int, size: tuple[int, int], seed: int) -> SampleVideo:
    background = _background(size, seed)
    frames: list[np.ndarray] = []
    keypoints = np.zeros((num_frames, NUM_JOINTS, 3), dtype=np.float32)
    for t in range(num_frames):
        joints = _skeleton(pose, t)
        img = background.copy()
        _draw_figure(img, joints, pose.height)
        frames.append(img)
        keypoints[t, :, :2] = joints
        keypoints[t, :, 2] = 1.0
        keypoints[t, 3:5, 2] = 0.0  # PoseTrack never labels the ears
    key = key_frame_position(num_frames)
    return SampleVideo(frames, _figure_box(keypoints[key, :, :2], pose.height, size), keypoints)


def _check_video_args(num_frames: int, size: Sequence[int]) -> tuple[int, int]:
    if num_frames < 1:
        raise DataError(f"num_frames must be at least 1, got {num_frames}")
    h, w = _as_size(size, "size (H, W)")
    if h < 64 or w < 64:
        raise DataError(f"the sample video must be at least 64x64 pixels, got {w}x{h}")
    return h, w


def sample_video(num_frames: int = 5, size: Sequence[int] = (720, 1280), seed: int = 0) -> SampleVideo:
    """A deterministic ``num_frames`` video of one walking figure; the box is the middle (key) frame's.

    ``seed`` changes the background texture only; the figure's pose is fixed so the default sample
    is always the same picture.
    """
    h, w = _check_video_args(num_frames, size)
    return _render(_default_pose((h, w)), num_frames, (h, w), seed)


def moving_figure_video(
    num_frames: int, size: Sequence[int] = (360, 640), seed: int = 0, speed: float = 1.0
) -> tuple[SampleVideo, np.ndarray]:
    """A random walking figure (pose, size, place, background from ``seed``) and its box on every frame.

    ``speed`` scales the figure's motion across the image; the per-frame boxes [T, 4] (x, y, w, h)
    are drawn like a detector's, so whole-video pipelines can be scored against known keypoints.
    """
    h, w = _check_video_args(num_frames, size)
    rng = np.random.default_rng(seed)
    pose = _random_pose((h, w), rng, num_frames)
    if speed != 1.0:
        dx = pose.dx * speed
        margin = 0.45 * pose.height + abs(dx) * num_frames
        x = min(max(pose.x - dx * num_frames / 2, margin / 2), w - margin / 2)
        pose = _Pose(x, pose.y, pose.height, pose.phase, pose.phase_step, dx, pose.lean, pose.arm_lift)
    video = _render(pose, num_frames, (h, w), int(rng.integers(0, 2**31)))
    boxes = np.stack([_figure_box(video.keypoints[t, :, :2], pose.height, (h, w)) for t in range(num_frames)])
    return video, boxes


@functools.lru_cache(maxsize=8)
def _cached_clip(input_size: tuple[int, int], num_frames: int) -> tuple[np.ndarray, SampleClipInfo]:
    video = sample_video(num_frames=num_frames)
    clip, crop = crop_clip(video.frames, video.box_xywh, input_size)
    key = key_frame_position(num_frames)
    keypoints = video.keypoints[key].copy()
    for arr in (clip, keypoints, crop.center, crop.scale, crop.box_xywh):
        arr.flags.writeable = False  # shared by every caller through the cache
    return clip[None], SampleClipInfo(crop=crop, keypoints=keypoints, frame_index=key)


def sample_clip(
    input_size: Sequence[int] = (384, 288), num_frames: int = 3
) -> tuple[np.ndarray, SampleClipInfo]:
    """The built-in input: float32 [1, T, 3, H, W] (normalised RGB) cropped around the middle frame.

    Cached: repeated calls cost a copy; the returned info is shared and read-only.
    """
    in_h, in_w = _as_size(input_size, "input_size (H, W)")
    _check_video_args(num_frames, (720, 1280))
    clip, info = _cached_clip((in_h, in_w), int(num_frames))
    return clip.copy(), info


def sample_clips(
    n: int, input_size: Sequence[int] = (384, 288), num_frames: int = 3, seed: int = 0
) -> tuple[np.ndarray, list[SampleClipInfo]]:
    """``n`` different clips [n, T, 3, H, W] (pose, size, position, background vary) for calibration."""
    if n < 1:
        raise DataError(f"n must be at least 1, got {n}")
    in_h, in_w = _as_size(input_size, "input_size (H, W)")
    size = (360, 640)  # smaller frames keep calibration sets cheap; the crop hides the difference
    _check_video_args(num_frames, size)
    rng = np.random.default_rng(seed)
    clips = np.empty((n, num_frames, 3, in_h, in_w), dtype=np.float32)
    infos: list[SampleClipInfo] = []
    key = key_frame_position(num_frames)
    for i in range(n):
        pose = _random_pose(size, rng, num_frames)
        video = _render(pose, num_frames, size, int(rng.integers(0, 2**31)))
        clips[i], crop = crop_clip(video.frames, video.box_xywh, (in_h, in_w))
        infos.append(SampleClipInfo(crop=crop, keypoints=video.keypoints[key], frame_index=key))
    return clips, infos
