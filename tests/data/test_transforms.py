"""Pre/post-processing: crop geometry, heatmap decoding round trip, flip test, targets, validation."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tdmi.data.targets import gaussian_heatmap, render_gaussian
from tdmi.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CropInfo,
    affine_transform_points,
    box_to_center_scale,
    clip_indices,
    crop_clip,
    crop_clips,
    dark_kernel_size,
    denormalize,
    flip_back_heatmaps,
    flip_clip,
    get_affine_transform,
    get_max_preds,
    heatmaps_to_keypoints,
    key_frame_position,
    merge_flip,
    normalize,
    stack_crop_infos,
)
from tdmi.errors import DataError, TdmiError
from tdmi.spec.joints import FLIP_PAIRS, NUM_JOINTS


@pytest.fixture(scope="module")
def frames(sample_clip_frames: list[Path]) -> list[np.ndarray]:
    imgs = [cv2.imread(str(p)) for p in sample_clip_frames]
    assert all(i is not None and i.shape == (720, 1280, 3) for i in imgs)
    return imgs


@pytest.fixture(scope="module")
def real_boxes(posetrack18: Path) -> np.ndarray:
    """Ground-truth PoseTrack18 person boxes that lie inside the 1280x720 sample frames."""
    data = json.loads((posetrack18 / "annotations" / "test_posetrack18_val.json").read_text())
    boxes = [
        a["bbox"]
        for a in data["annotations"]
        if a["bbox"][0] >= 0 and a["bbox"][1] >= 0 and a["bbox"][0] + a["bbox"][2] < 1280
        and a["bbox"][1] + a["bbox"][3] < 720
    ]  # fmt: skip
    assert len(boxes) >= 3
    return np.asarray(boxes[:3], dtype=np.float64)


# ---------------------------------------------------------------------------------------------- geometry


def test_box_grows_to_model_aspect_ratio_with_padding() -> None:
    # tall box: width grows to 0.75 * height
    c, s = box_to_center_scale([10, 20, 30, 120], aspect_ratio=0.75)
    np.testing.assert_allclose(c, [25, 80])
    np.testing.assert_allclose(s, [90 / 200 * 1.25, 120 / 200 * 1.25], rtol=1e-6)
    # wide box: height grows to width / 0.75
    c, s = box_to_center_scale([0, 0, 300, 100], aspect_ratio=0.75, padding=1.0)
    np.testing.assert_allclose(c, [150, 50])
    np.testing.assert_allclose(s, [1.5, 2.0], rtol=1e-6)
    # configurable padding and pixel_std
    _, s2 = box_to_center_scale([0, 0, 300, 100], aspect_ratio=0.75, padding=1.5, pixel_std=100)
    np.testing.assert_allclose(s2, [4.5, 6.0], rtol=1e-6)


def test_affine_maps_padded_box_onto_crop_and_inverts() -> None:
    c, s = box_to_center_scale([100, 50, 60, 80], aspect_ratio=0.75)
    fwd = get_affine_transform(c, s, (288, 384))
    inv = get_affine_transform(c, s, (288, 384), inv=True)
    half = s * 200 / 2
    corners = np.array([c, c - half, c + half])
    np.testing.assert_allclose(
        affine_transform_points(corners, fwd), [[144, 192], [0, 0], [288, 384]], atol=1e-3
    )
    pts = np.array([[101.3, 52.7], [150.0, 120.25]])
    np.testing.assert_allclose(
        affine_transform_points(affine_transform_points(pts, fwd), inv), pts, atol=1e-3
    )


def test_rotation_is_in_degrees_and_turns_the_crop() -> None:
    c = np.array([100.0, 100.0])
    fwd = get_affine_transform(c, [1.0, 1.0], (200, 200), rot=90)
    # with rot=90 the image point right of the centre ends up straight above the crop centre
    np.testing.assert_allclose(affine_transform_points(np.array([150.0, 100.0]), fwd), [100, 50], atol=1e-3)


# ---------------------------------------------------------------------------------------------- clips


def test_clip_indices_centre_and_clamp() -> None:
    assert clip_indices(50, 5, 100) == [48, 49, 50, 51, 52]
    assert clip_indices(0, 5, 100) == [0, 0, 0, 1, 2]
    assert clip_indices(1, 5, 100) == [0, 0, 1, 2, 3]
    assert clip_indices(99, 5, 100) == [97, 98, 99, 99, 99]
    assert clip_indices(98, 5, 100) == [96, 97, 98, 99, 99]
    assert clip_indices(0, 3, 1) == [0, 0, 0]
    assert clip_indices(7, 1, 10) == [7]
    # even T: the key frame sits at T // 2 (one more past frame than future frame)
    assert clip_indices(10, 4, 100) == [8, 9, 10, 11]
    for t in (1, 2, 3, 4, 5):
        assert clip_indices(30, t, 100)[key_frame_position(t)] == 30


def test_normalisation_constants_and_round_trip() -> None:
    np.testing.assert_allclose(IMAGENET_MEAN, [0.485, 0.456, 0.406])
    np.testing.assert_allclose(IMAGENET_STD, [0.229, 0.224, 0.225])
    mean_img = np.broadcast_to(np.rint(IMAGENET_MEAN * 255).astype(np.uint8), (4, 5, 3))
    out = normalize(mean_img)
    assert out.shape == (3, 4, 5) and out.dtype == np.float32
    assert np.abs(out).max() < 0.01
    white = normalize(np.full((2, 2, 3), 255, np.uint8))
    np.testing.assert_allclose(white[:, 0, 0], (1 - IMAGENET_MEAN) / IMAGENET_STD, rtol=1e-5)
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (2, 6, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(denormalize(normalize(img)), img)


def test_all_frames_are_cropped_with_the_key_frame_box(
    frames: list[np.ndarray], real_boxes: np.ndarray
) -> None:
    box = real_boxes[0]
    marker = np.array([box[0] + 0.3 * box[2], box[1] + 0.6 * box[3]])
    marked = []
    for f in frames:
        g = f.copy()
        x, y = np.rint(marker).astype(int)
        g[y - 3 : y + 4, x - 3 : x + 4] = (255, 0, 0)  # pure blue in BGR
        marked.append(g)
    clip, info = crop_clip(marked, box, (256, 192))
    assert clip.shape == (5, 3, 256, 192) and clip.dtype == np.float32
    assert isinstance(info, CropInfo) and info.input_size == (256, 192) and info.frame_size == (720, 1280)
    expected = affine_transform_points(np.rint(marker), info.transform())
    rgb = denormalize(clip).astype(int)  # [T, H, W, 3] RGB
    for t in range(len(frames)):
        blue = (rgb[t, ..., 2] > 200) & (rgb[t, ..., 0] < 60) & (rgb[t, ..., 1] < 60)
        ys, xs = np.nonzero(blue)
        assert len(xs) > 5, f"marker not found in frame {t}"
        np.testing.assert_allclose([xs.mean(), ys.mean()], expected, atol=1.0)
    # RGB input is taken as is when bgr=False: the same marker now reads as red
    clip_rgb, _ = crop_clip(marked, box, (256, 192), bgr=False)
    np.testing.assert_array_equal(denormalize(clip_rgb)[..., ::-1], denormalize(clip))


def test_batched_crops_match_single_crops(frames: list[np.ndarray], real_boxes: np.ndarray) -> None:
    clips, infos = crop_clips(frames[:3], real_boxes, (128, 96))
    assert clips.shape == (3, 3, 3, 128, 96)
    for n, box in enumerate(real_boxes):
        single, info = crop_clip(frames[:3], box, (128, 96))
        np.testing.assert_array_equal(clips[n], single)
        np.testing.assert_array_equal(infos[n].center, info.center)
    centers, scales = stack_crop_infos(infos)
    assert centers.shape == scales.shape == (3, 2)


# ---------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("input_size", [(384, 288), (256, 192)])
def test_heatmap_round_trip_to_image_coordinates(
    frames: list[np.ndarray], real_boxes: np.ndarray, input_size: tuple[int, int]
) -> None:
    """A Gaussian drawn at a keypoint's heatmap position decodes back to the keypoint in the image."""
    _, infos = crop_clips(frames[:1], real_boxes, input_size)
    hm_h, hm_w = input_size[0] // 4, input_size[1] // 4
    fractions = [0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9]
    # per person, one joint per (fx, fy) sub-pixel offset, spread over the heatmap interior
    grid = [(fx, fy) for fx in fractions for fy in fractions[::3]][:NUM_JOINTS]
    image_pts = np.zeros((len(infos), len(grid), 2))
    heatmaps = np.zeros((len(infos), len(grid), hm_h, hm_w), np.float32)
    for n, info in enumerate(infos):
        inv = info.transform((hm_h, hm_w), inv=True)
        fwd = info.transform((hm_h, hm_w))
        for j, (fx, fy) in enumerate(grid):
            hm_pt = np.array([4 + (j * 7) % (hm_w - 10) + fx, 5 + (j * 11) % (hm_h - 12) + fy])
            image_pts[n, j] = affine_transform_points(hm_pt, inv)  # the keypoint in the real frame
            heatmaps[n, j] = render_gaussian(affine_transform_points(image_pts[n, j], fwd), (hm_h, hm_w))
    centers, scales = stack_crop_infos(infos)
    stride = scales[:, 0] * 200 / hm_w  # image pixels per heatmap pixel, per person
    errors = {}
    for refine in ("none", "quarter", "dark"):
        kps, scores = heatmaps_to_keypoints(heatmaps, centers, scales, refine=refine)
        assert kps.shape == (len(infos), len(grid), 2) and scores.shape == (len(infos), len(grid))
        assert np.all(scores > 0.8)
        errors[refine] = np.abs(kps - image_pts).max(axis=-1) / stride[:, None]
    assert errors["none"].max() <= 0.5 + 1e-3
    assert errors["quarter"].max() <= 0.25 + 1e-3
    assert errors["dark"].max() <= 0.25
    assert errors["quarter"].mean() < errors["none"].mean()
    assert errors["dark"].mean() <= errors["quarter"].mean()
    assert errors["dark"].max() < 0.05


def test_max_preds_finds_peaks_and_ignores_empty_maps() -> None:
    hm = np.zeros((2, 3, 8, 6), np.float32)
    hm[0, 0, 5, 2] = 0.9
    hm[1, 2, 1, 4] = 0.4
    hm[1, 1] = -1.0
    hm[1, 1, 3, 3] = -0.5
    coords, maxvals = get_max_preds(hm)
    assert coords.shape == (2, 3, 2) and maxvals.shape == (2, 3, 1)
    np.testing.assert_array_equal(coords[0, 0], [2, 5])
    np.testing.assert_array_equal(coords[1, 2], [4, 1])
    np.testing.assert_allclose(maxvals[:, :, 0], [[0.9, 0, 0], [0, -0.5, 0.4]])
    # joints without a positive peak are reported at the origin (canonical behaviour)
    np.testing.assert_array_equal(coords[1, 1], [0, 0])
    np.testing.assert_array_equal(coords[0, 1], [0, 0])


def test_dark_kernel_size_follows_sigma() -> None:
    assert dark_kernel_size(2.0) == 11
    assert dark_kernel_size(3.0) == 17
    assert dark_kernel_size(1.0) % 2 == 1


# ---------------------------------------------------------------------------------------------- flip test


def test_flip_clip_mirrors_width_only() -> None:
    clip = np.random.default_rng(0).standard_normal((1, 3, 3, 8, 6)).astype(np.float32)
    flipped = flip_clip(clip)
    np.testing.assert_array_equal(flipped[..., 0], clip[..., 5])
    np.testing.assert_array_equal(flip_clip(flipped), clip)


def test_flip_back_swaps_sides_and_mirrors_x() -> None:
    hm = np.zeros((1, NUM_JOINTS, 16, 12), np.float32)
    hm[0, 5, 7, 3] = 1.0  # left_shoulder peak
    hm[0, 0, 2, 6] = 1.0  # nose has no partner
    plain = flip_back_heatmaps(hm, shift=False)
    assert plain[0, 6, 7, 12 - 1 - 3] == 1.0 and plain[0, 5].max() == 0
    assert plain[0, 0, 2, 12 - 1 - 6] == 1.0
    shifted = flip_back_heatmaps(hm, shift=True)
    assert shifted[0, 6, 7, 12 - 3] == 1.0
    # without the shift, flipping back twice is the identity (also for a single [J, h, w] set)
    rng = np.random.default_rng(0)
    rand = rng.random((2, NUM_JOINTS, 16, 12)).astype(np.float32)
    np.testing.assert_array_equal(
        flip_back_heatmaps(flip_back_heatmaps(rand, shift=False), shift=False), rand
    )
    np.testing.assert_array_equal(
        flip_back_heatmaps(flip_back_heatmaps(rand[0], shift=False), shift=False), rand[0]
    )
    # a prediction that agrees with its mirror image is returned by merge_flip unchanged
    flipped_output = flip_back_heatmaps(rand, FLIP_PAIRS, shift=False)
    np.testing.assert_allclose(merge_flip(rand, flipped_output, shift=False), rand, atol=1e-6)


def test_flip_shift_aligns_the_flipped_prediction() -> None:
    """The canonical 1-pixel shift brings a mirrored keypoint back to within 1/4 heatmap pixel."""
    input_size, hm_size = (256, 192), (64, 48)
    c, s = box_to_center_scale([300, 100, 120, 200], aspect_ratio=0.75)
    to_crop = get_affine_transform(c, s, input_size[::-1])
    pts = np.array([[330.3, 140.6], [380.0, 250.1], [355.7, 180.2]])
    # the ideal network answer on the flipped crop: the mirrored crop pixel, at heatmap resolution
    crop_pts = affine_transform_points(pts, to_crop)
    mirrored = np.stack([input_size[1] - 1 - crop_pts[:, 0], crop_pts[:, 1]], -1) * (
        hm_size[1] / input_size[1]
    )
    hm_flipped = np.zeros((1, NUM_JOINTS, *hm_size), np.float32)
    joints = [5, 9, 13]  # left shoulder, left wrist, left knee -> come back as right joints
    for j, p in zip(joints, mirrored, strict=True):
        hm_flipped[0, j] = render_gaussian(p, hm_size)
    right = [j + 1 for j in joints]
    stride = s[0] * 200 / hm_size[1]
    errs = {}
    for shift in (False, True):
        back = flip_back_heatmaps(hm_flipped, shift=shift)
        kps, _ = heatmaps_to_keypoints(back, c[None], s[None], refine="dark")
        errs[shift] = np.abs(kps[0, right] - pts).max() / stride
    assert errs[True] <= 0.25 + 0.02
    assert errs[False] > errs[True]


# ---------------------------------------------------------------------------------------------- targets


def test_gaussian_target_canonical_and_weights() -> None:
    joints = np.array([[10.3, 20.6], [40.0, 5.0], [-20.0, 10.0], [30.0, 30.0]])
    vis = np.array([1, 1, 1, 0])
    target, weight = gaussian_heatmap(joints, vis, (64, 48), sigma=2)
    assert target.shape == (4, 64, 48) and target.dtype == np.float32
    np.testing.assert_array_equal(weight, [1, 1, 0, 0])  # off-map and invisible joints get weight 0
    assert target[0, 21, 10] == 1.0  # centre rounded to the nearest pixel
    ys, xs = np.nonzero(target[0])
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (4, 16, 15, 27)  # cut at 3 sigma: 13x13 patch
    assert target[2].max() == 0 and target[3].max() == 0
    # joint 1 sits near the top edge: its patch is clipped, the weight stays
    assert target[1, 0, 40] == pytest.approx(np.exp(-25 / 8))


def test_unbiased_target_decodes_to_subpixel_position() -> None:
    joints = np.array([[20.3, 30.7], [12.85, 40.15]])
    target, _ = gaussian_heatmap(joints, np.ones(2), (64, 48), unbiased=True)
    # identity back-transform: scale chosen so heatmap == image pixels, centre at the heatmap centre
    center, scale = np.array([[24.0, 32.0]]), np.array([[48 / 200, 64 / 200]])
    kps, _ = heatmaps_to_keypoints(target[None], center, scale, refine="dark")
    np.testing.assert_allclose(kps[0], joints, atol=0.05)
    peak = render_gaussian((5.0, 7.0), (16, 12), sigma=2)
    assert peak[7, 5] == 1.0 and peak.shape == (16, 12)


# ---------------------------------------------------------------------------------------------- errors


def test_invalid_inputs_raise_data_error(frames: list[np.ndarray]) -> None:
    good = [frames[0], frames[1]]
    cases = [
        (lambda: box_to_center_scale([0, 0, 0, 10], 0.75), "non-positive width or height"),
        (lambda: box_to_center_scale([0, 0, 10], 0.75), "4 numbers"),
        (lambda: box_to_center_scale([0, 0, 10, 10], 0.0), "aspect_ratio"),
        (lambda: crop_clip([], [0, 0, 10, 10]), "empty"),
        (lambda: crop_clip([frames[0], frames[0][:100]], [0, 0, 10, 10]), "same size"),
        (lambda: crop_clip([frames[0][..., 0]], [0, 0, 10, 10]), "HxWx3"),
        (lambda: crop_clip([frames[0].astype(np.float32)], [0, 0, 10, 10]), "uint8"),
        (lambda: crop_clip(good, [0, 0, -5, 10]), "non-positive"),
        (lambda: crop_clip(good, [0, 0, 5, 10], input_size=(0, 192)), "positive"),
        (lambda: crop_clips(good, [[0, 0, 5, 10, 1]]), "[N, 4]"),
        (lambda: clip_indices(10, 5, 10), "outside the video"),
        (lambda: clip_indices(0, 0, 10), "num_frames"),
        (lambda: get_max_preds(np.zeros((17, 8, 6))), "[N, J, h, w]"),
        (
            lambda: heatmaps_to_keypoints(np.zeros((2, 17, 8, 6)), np.zeros((1, 2)), np.ones((2, 2))),
            "centers",
        ),
        (
            lambda: heatmaps_to_keypoints(np.zeros((1, 17, 8, 6)), np.zeros((1, 2)), np.ones((1, 2)), "x"),
            "refine",
        ),
        (lambda: flip_back_heatmaps(np.zeros((1, 4, 8, 6))), "out of range"),
        (lambda: merge_flip(np.zeros((1, 17, 8, 6)), np.zeros((1, 17, 8, 5))), "same shape"),
        (lambda: gaussian_heatmap(np.zeros((3, 2)), np.ones(2), (8, 6)), "visibility"),
        (lambda: normalize(np.zeros((4, 4, 3), np.float32)), "uint8"),
    ]
    for fn, fragment in cases:
        with pytest.raises(DataError) as exc:
            fn()
        assert fragment in str(exc.value), (fragment, str(exc.value))
        assert isinstance(exc.value, TdmiError) and "\n" not in str(exc.value)
