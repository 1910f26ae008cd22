"""The built-in sample clip: deterministic, cheap, and a faithful person crop."""

from __future__ import annotations

import numpy as np
import pytest

from tdmi.data import sample
from tdmi.data.sample import sample_clip, sample_clips, sample_video
from tdmi.data.transforms import affine_transform_points, denormalize
from tdmi.errors import DataError
from tdmi.spec.joints import NUM_JOINTS


def test_sample_video_is_deterministic_with_moving_figure() -> None:
    a = sample_video()
    b = sample_video()
    assert len(a.frames) == 5
    assert all(f.shape == (720, 1280, 3) and f.dtype == np.uint8 for f in a.frames)
    for fa, fb in zip(a.frames, b.frames, strict=True):
        np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.box_xywh, b.box_xywh)
    assert a.keypoints.shape == (5, NUM_JOINTS, 3)
    # the figure moves a little between frames, and the frames show it
    step = np.linalg.norm(np.diff(a.keypoints[:, :, :2], axis=0), axis=-1)
    assert step.max() > 2 and step.max() < 0.05 * 1280
    assert not np.array_equal(a.frames[0], a.frames[1])
    # PoseTrack labels: ears never visible; a figure facing the camera has its left side at larger x
    np.testing.assert_array_equal(a.keypoints[:, 3:5, 2], 0)
    assert np.all(np.delete(a.keypoints[:, :, 2], [3, 4], axis=1) == 1)
    assert np.all(a.keypoints[:, 5, 0] > a.keypoints[:, 6, 0]) and np.all(
        a.keypoints[:, 11, 0] > a.keypoints[:, 12, 0]
    )


def test_sample_box_contains_the_figure() -> None:
    video = sample_video(num_frames=3, size=(360, 640), seed=3)
    x, y, w, h = video.box_xywh
    key = video.keypoints[1, :, :2]
    assert np.all((key[:, 0] > x) & (key[:, 0] < x + w) & (key[:, 1] > y) & (key[:, 1] < y + h))
    # every drawn pixel of the key frame (where it differs from the bare background) is in the box
    drawn = np.any(video.frames[1] != sample._background((360, 640), 3), axis=-1)
    ys, xs = np.nonzero(drawn)
    assert len(xs) > 1000
    assert xs.min() >= x and xs.max() <= x + w and ys.min() >= y and ys.max() <= y + h
    # the person fills a sensible part of the box, like a detector's box
    assert (xs.max() - xs.min()) > 0.6 * w and (ys.max() - ys.min()) > 0.7 * h


def test_sample_clip_shapes_and_determinism() -> None:
    clip, info = sample_clip()
    assert clip.shape == (1, 3, 3, 384, 288) and clip.dtype == np.float32
    assert info.frame_index == 1 and info.crop.input_size == (384, 288)
    clip[...] = 0  # callers own their copy
    again, _ = sample_clip()
    sample._cached_clip.cache_clear()
    fresh, _ = sample_clip()
    np.testing.assert_array_equal(again, fresh)
    assert np.abs(again).max() > 1
    clip5, info5 = sample_clip((256, 192), num_frames=5)
    assert clip5.shape == (1, 5, 3, 256, 192) and info5.frame_index == 2
    clip4, info4 = sample_clip((256, 192), num_frames=4)
    assert clip4.shape == (1, 4, 3, 256, 192) and info4.frame_index == 2


def _joint_pixels(clip: np.ndarray, info: sample.SampleClipInfo) -> np.ndarray:
    """RGB crop pixels at the figure's (visible) key-frame joints."""
    key = denormalize(clip[0, info.frame_index]).astype(int)
    pts = np.rint(affine_transform_points(info.keypoints[:, :2], info.crop.transform())).astype(int)
    h, w = info.crop.input_size
    assert np.all((pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h))
    return key[pts[5:, 1], pts[5:, 0]]  # shoulders .. ankles carry white joint discs


def test_sample_clip_crop_info_matches_the_figure() -> None:
    clip, info = sample_clip((256, 192))
    pixels = _joint_pixels(clip, info)
    assert np.all(pixels > 200), pixels


def test_sample_clips_differ_and_repeat_by_seed() -> None:
    clips, infos = sample_clips(4, (128, 96), num_frames=3, seed=7)
    assert clips.shape == (4, 3, 3, 128, 96) and clips.dtype == np.float32 and len(infos) == 4
    again, _ = sample_clips(4, (128, 96), num_frames=3, seed=7)
    np.testing.assert_array_equal(clips, again)
    other, _ = sample_clips(4, (128, 96), num_frames=3, seed=8)
    assert not np.array_equal(clips, other)
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(clips[i] - clips[j]).mean() > 0.1
    assert len({tuple(np.round(info.keypoints[5, :2], 1)) for info in infos}) == 4
    for n, info in enumerate(infos):
        pixels = _joint_pixels(clips[n : n + 1], info)
        assert np.mean(np.all(pixels > 180, axis=-1)) > 0.8  # small crops blur a few joint discs


def test_sample_errors() -> None:
    with pytest.raises(DataError, match="num_frames"):
        sample_video(num_frames=0)
    with pytest.raises(DataError, match="64x64"):
        sample_video(size=(32, 32))
    with pytest.raises(DataError, match="at least 1"):
        sample_clips(0)
    with pytest.raises(DataError, match="input_size"):
        sample_clip((0, 288))
