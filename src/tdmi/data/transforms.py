"""Top-down pose pre/post-processing with the canonical HRNet (deep-high-resolution-net) semantics.

Checkpoints trained with the canonical code expect exactly its cropping geometry (box enlarged to the
input aspect ratio, x1.25, ``pixel_std`` = 200, centre mapped to ``(w/2, h/2)``) and its decoding
(argmax + quarter-pixel shift, inverse affine). Deviating by half a pixel costs measurable AP, so
these functions reproduce that code rather than a "cleaner" variant. DARK decoding (Zhang et al.,
CVPR 2020, as in mmpose ``refine_keypoints_dark``) is offered as an option.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tdmi.errors import DataError
from tdmi.spec.decoding import Refine
from tdmi.spec.joints import FLIP_PAIRS
from tdmi.spec.normalization import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PIXEL_STD",
    "CropInfo",
    "affine_transform_points",
    "box_to_center_scale",
    "clip_indices",
    "crop_clip",
    "crop_clips",
    "dark_kernel_size",
    "denormalize",
    "flip_back_heatmaps",
    "flip_clip",
    "gaussian_heatmap",
    "get_affine_transform",
    "get_max_preds",
    "heatmaps_to_keypoints",
    "key_frame_position",
    "merge_flip",
    "normalize",
    "render_gaussian",
    "stack_crop_infos",
]

# ImageNet statistics of RGB pixels in [0, 1]: what the HRNet backbone was pretrained with.
# The canonical code expresses box scales in units of 200 pixels.
PIXEL_STD = 200.0


# --------------------------------------------------------------------------------------------------
# validation helpers


def _as_size(size: Sequence[int], name: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in size)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be two integers, got {size!r}") from None
    if a <= 0 or b <= 0 or (a, b) != tuple(float(v) for v in size):
        raise DataError(f"{name} must be two positive integers, got {tuple(size)!r}")
    return a, b


def _as_box(box_xywh: Sequence[float] | np.ndarray) -> np.ndarray:
    box = np.asarray(box_xywh, dtype=np.float64)
    if box.shape != (4,):
        raise DataError(f"a box must be [x, y, w, h] (4 numbers), got shape {box.shape}")
    if not np.all(np.isfinite(box)):
        raise DataError(f"box {box.tolist()} has non-finite values")
    if box[2] <= 0 or box[3] <= 0:
        raise DataError(
            f"box {box.tolist()} has non-positive width or height: pass [x, y, w, h], not x1y1x2y2"
        )
    return box


def _as_pairs(arr: Sequence[float] | np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    out = np.asarray(arr, dtype=np.float64)
    if out.ndim != 2 or out.shape[1] != 2 or (n is not None and out.shape[0] != n):
        want = f"[{n}, 2]" if n is not None else "[N, 2]"
        raise DataError(f"{name} must have shape {want}, got {out.shape}")
    if not np.all(np.isfinite(out)):
        raise DataError(f"{name} has non-finite values")
    return out


def _check_heatmaps(heatmaps: np.ndarray) -> np.ndarray:
    hm = np.asarray(heatmaps)
    if hm.ndim != 4:
        raise DataError(f"heatmaps must be [N, J, h, w], got shape {hm.shape}")
    if min(hm.shape) == 0:
        raise DataError(f"heatmaps must not be empty, got shape {hm.shape}")
    if not np.issubdtype(hm.dtype, np.floating):
        hm = hm.astype(np.float32)
    return hm


# --------------------------------------------------------------------------------------------------
# geometry


def box_to_center_scale(
    box_xywh: Sequence[float] | np.ndarray,
    aspect_ratio: float,
    padding: float = 1.25,
    pixel_std: float = PIXEL_STD,
) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale of a person box, grown to the model's aspect ratio (canonical ``_xywh2cs``).

    ``aspect_ratio`` is the model input's width / height (288 / 384 = 0.75 by default); the scale is in
    ``pixel_std`` units and includes ``padding`` so limbs just outside the detector box stay in view.
    """
    x, y, w, h = _as_box(box_xywh)
    if not (aspect_ratio > 0 and math.isfinite(aspect_ratio)):
        raise DataError(f"aspect_ratio must be a positive width/height ratio, got {aspect_ratio}")
    if not (padding > 0 and math.isfinite(padding)):
        raise DataError(f"padding must be a positive factor (1.25 canonical), got {padding}")
    if not pixel_std > 0:
        raise DataError(f"pixel_std must be positive, got {pixel_std}")
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / pixel_std, h / pixel_std], dtype=np.float32) * np.float32(padding)
    return center, scale


def _rotate(point: np.ndarray, rot_rad: float) -> np.ndarray:
    sn, cs = math.sin(rot_rad), math.cos(rot_rad)
    return np.array([point[0] * cs - point[1] * sn, point[0] * sn + point[1] * cs], dtype=np.float32)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    direct = a - b
    return b + np.array([-direct[1], direct[0]], dtype=np.float32)


def get_affine_transform(
    center: Sequence[float] | np.ndarray,
    scale: Sequence[float] | np.ndarray | float,
    output_size: Sequence[int],
    rot: float = 0.0,
    inv: bool = False,
    pixel_std: float = PIXEL_STD,
) -> np.ndarray:
    """2x3 matrix mapping the scaled box to an ``output_size`` = (w, h) image (canonical code, 3 points).

    Only ``scale[0]`` (the width) sets the zoom, as in the canonical code; the box is expected to
    already have the output's aspect ratio (see :func:`box_to_center_scale`). ``inv`` gives the
    mapping back from output pixels to the original image. ``rot`` is in degrees.
    """
    import cv2  # lazily: the rest of this module loads without OpenCV (the bare GPU image)

    c = np.asarray(center, dtype=np.float32)
    if c.shape != (2,):
        raise DataError(f"center must be (x, y), got shape {c.shape}")
    s = np.asarray(scale, dtype=np.float32)
    if s.ndim == 0:
        s = np.array([s, s], dtype=np.float32)
    if s.shape != (2,) or not np.all(s > 0):
        raise DataError(f"scale must be two positive numbers, got {np.asarray(scale).tolist()}")
    dst_w, dst_h = _as_size(output_size, "output_size (w, h)")
    scale_tmp = s * np.float32(pixel_std)
    src_w = scale_tmp[0]
    rot_rad = math.pi * rot / 180.0
    src_dir = _rotate(np.array([0.0, src_w * -0.5]), rot_rad)
    dst_dir = np.array([0.0, dst_w * -0.5], dtype=np.float32)

    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = c
    src[1] = c + src_dir
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = dst[0] + dst_dir
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    if inv:
        return cv2.getAffineTransform(dst, src)
    return cv2.getAffineTransform(src, dst)


def affine_transform_points(points: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points of shape [..., 2] (vectorised canonical ``affine_transform``)."""
    pts = np.asarray(points, dtype=np.float64)
    t = np.asarray(trans, dtype=np.float64)
    if t.shape != (2, 3):
        raise DataError(f"an affine transform must be 2x3, got shape {t.shape}")
    if pts.ndim == 0 or pts.shape[-1] != 2:
        raise DataError(f"points must have shape [..., 2], got {pts.shape}")
    return pts @ t[:, :2].T + t[:, 2]


# --------------------------------------------------------------------------------------------------
# clips: frame selection, cropping, normalisation


def key_frame_position(num_frames: int) -> int:
    """Position of the key frame inside a clip of ``num_frames``: the middle, ``T // 2``.

    For even T this puts one more past frame than future frame in the clip.
    """
    if num_frames < 1:
        raise DataError(f"num_frames must be at least 1, got {num_frames}")
    return num_frames // 2


def clip_indices(key_index: int, num_frames: int, video_length: int) -> list[int]:
    """Frame indices of the clip around ``key_index``, clamped to the video (ends are repeated).

    T = 2*delta + 1 gives key-delta .. key+delta; for even T the key frame sits at ``T // 2``
    (frames key - T//2 .. key + T//2 - 1). Clamping repeats the first/last frame, which is the usual
    convention of video pose estimators at sequence boundaries.
    """
    if video_length < 1:
        raise DataError(f"video_length must be at least 1, got {video_length}")
    if not 0 <= key_index < video_length:
        raise DataError(f"key frame {key_index} is outside the video (frames 0..{video_length - 1})")
    first = key_index - key_frame_position(num_frames)
    return [min(max(first + k, 0), video_length - 1) for k in range(num_frames)]


def normalize(images_rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB images [..., H, W, 3] -> float32 [..., 3, H, W] with ImageNet mean/std."""
    img = np.asarray(images_rgb)
    if img.ndim < 3 or img.shape[-1] != 3:
        raise DataError(f"images must be [..., H, W, 3] RGB, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise DataError(f"images must be uint8 (0..255), got {img.dtype}")
    inv = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
    off = (IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)
    out = img.astype(np.float32) * inv - off
    return np.ascontiguousarray(np.moveaxis(out, -1, -3))


def denormalize(clip: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalize`: float [..., 3, H, W] -> uint8 RGB [..., H, W, 3] (for viewing)."""
    arr = np.asarray(clip, dtype=np.float32)
    if arr.ndim < 3 or arr.shape[-3] != 3:
        raise DataError(f"clip must be [..., 3, H, W], got shape {arr.shape}")
    rgb = np.moveaxis(arr, -3, -1) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields explicitly
class CropInfo:
    """What is needed to map heatmap coordinates of one crop back to the original image."""

    center: np.ndarray  # (2,) float32, image pixels
    scale: np.ndarray  # (2,) float32, in pixel_std units, padding included
    input_size: tuple[int, int]  # (H, W) of the crop
    box_xywh: np.ndarray  # (4,) the box the crop was made from
    frame_size: tuple[int, int]  # (H, W) of the original frames
    rotation: float = 0.0  # degrees

    def transform(self, output_size: tuple[int, int] | None = None, inv: bool = False) -> np.ndarray:
        """Affine from image to a (H, W) grid (the crop by default; pass the heatmap size for heatmaps)."""
        h, w = output_size if output_size is not None else self.input_size
        return get_affine_transform(self.center, self.scale, (w, h), rot=self.rotation, inv=inv)


def _check_frames(frames: Sequence[np.ndarray]) -> tuple[int, int]:
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        raise DataError("frames must be a sequence of HxWx3 images (or a [T, H, W, 3] array), got one image")
    if len(frames) == 0:
        raise DataError("the frame list is empty: a clip needs at least one frame")
    size: tuple[int, int] | None = None
    for i, f in enumerate(frames):
        if not isinstance(f, np.ndarray) or f.ndim != 3 or f.shape[2] != 3:
            shape = getattr(f, "shape", type(f).__name__)
            raise DataError(f"frame {i} must be an HxWx3 colour image, got {shape}")
        if f.dtype != np.uint8:
            raise DataError(f"frame {i} must be uint8 (as read by cv2.imread), got {f.dtype}")
        if size is None:
            size = (f.shape[0], f.shape[1])
        elif (f.shape[0], f.shape[1]) != size:
            raise DataError(
                f"frame {i} is {f.shape[1]}x{f.shape[0]} but frame 0 is {size[1]}x{size[0]}: "
                "all frames of a clip must have the same size"
            )
    assert size is not None
    return size


def _crop_one(
    frames: Sequence[np.ndarray],
    box: np.ndarray,
    in_h: int,
    in_w: int,
    padding: float,
    bgr: bool,
    rot: float,
    frame_size: tuple[int, int],
) -> tuple[np.ndarray, CropInfo]:
    import cv2  # lazily: the rest of this module loads without OpenCV (the bare GPU image)

    center, scale = box_to_center_scale(box, in_w / in_h, padding)
    trans = get_affine_transform(center, scale, (in_w, in_h), rot=rot)
    crops = np.empty((len(frames), in_h, in_w, 3), dtype=np.uint8)
    for t, frame in enumerate(frames):
        crops[t] = cv2.warpAffine(frame, trans, (in_w, in_h), flags=cv2.INTER_LINEAR)
    if bgr:
        crops = crops[..., ::-1]
    info = CropInfo(
        center=center,
        scale=scale,
        input_size=(in_h, in_w),
        box_xywh=box.astype(np.float32),
        frame_size=frame_size,
        rotation=float(rot),
    )
    return normalize(crops), info


def crop_clip(
    frames: Sequence[np.ndarray],
    box_xywh: Sequence[float] | np.ndarray,
    input_size: Sequence[int] = (384, 288),
    padding: float = 1.25,
    bgr: bool = True,
    rot: float = 0.0,
) -> tuple[np.ndarray, CropInfo]:
    """Crop all T frames with the key frame's box -> normalised float32 [T, 3, H, W] RGB and its CropInfo.

    Every frame uses the same (key-frame) affine, so the temporal differences the model computes see
    motion, not a moving crop window. ``bgr`` says the frames are BGR (cv2.imread); set False for RGB.
    """
    frame_size = _check_frames(frames)
    in_h, in_w = _as_size(input_size, "input_size (H, W)")
    return _crop_one(frames, _as_box(box_xywh), in_h, in_w, padding, bgr, rot, frame_size)


def crop_clips(
    frames: Sequence[np.ndarray],
    boxes_xywh: Sequence[Sequence[float]] | np.ndarray,
    input_size: Sequence[int] = (384, 288),
    padding: float = 1.25,
    bgr: bool = True,
) -> tuple[np.ndarray, list[CropInfo]]:
    """One clip per person box of the key frame -> float32 [N, T, 3, H, W] and N CropInfos."""
    frame_size = _check_frames(frames)
    in_h, in_w = _as_size(input_size, "input_size (H, W)")
    boxes = np.asarray(boxes_xywh, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"boxes must have shape [N, 4] (x, y, w, h), got {boxes.shape}")
    out = np.empty((boxes.shape[0], len(frames), 3, in_h, in_w), dtype=np.float32)
    infos: list[CropInfo] = []
    for n, box in enumerate(boxes):
        out[n], info = _crop_one(frames, _as_box(box), in_h, in_w, padding, bgr, 0.0, frame_size)
        infos.append(info)
    return out, infos


def stack_crop_infos(infos: Sequence[CropInfo]) -> tuple[np.ndarray, np.ndarray]:
    """Centres [N, 2] and scales [N, 2] of several crops, as :func:`heatmaps_to_keypoints` takes them."""
    if len(infos) == 0:
        raise DataError("no crops given")
    return np.stack([i.center for i in infos]), np.stack([i.scale for i in infos])


# --------------------------------------------------------------------------------------------------
# decoding heatmaps


def get_max_preds(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer argmax (x, y) [N, J, 2] and peak values [N, J, 1]; joints with peak <= 0 get (0, 0)."""
    hm = _check_heatmaps(heatmaps)
    n, j, _, w = hm.shape
    flat = hm.reshape(n, j, -1)
    idx = np.argmax(flat, axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2).astype(np.float32)
    preds = np.stack([idx % w, idx // w], axis=-1).astype(np.float32)
    preds *= (maxvals > 0.0).astype(np.float32)
    return preds, maxvals


def dark_kernel_size(sigma: float) -> int:
    """Gaussian modulation kernel for DARK, from mmpose's rule sigma = 0.3*((k-1)*0.5-1)+0.8.

    Gives 11 for sigma 2 and 17 for sigma 3 (the values the DARK / mmpose configs use).
    """
    if not sigma > 0:
        raise DataError(f"sigma must be positive, got {sigma}")
    half = max(1, round((sigma - 0.8) / 0.3 + 1.0))
    return 2 * half + 1


def _modulate(hm: np.ndarray, kernel: int) -> np.ndarray:
    """Blur each heatmap (zero border), keep its original maximum, and take the log (DARK step 1)."""
    import cv2  # lazily: the rest of this module loads without OpenCV (the bare GPU image)

    border = (kernel - 1) // 2
    out = np.empty(hm.shape, dtype=np.float64)
    n, j = hm.shape[:2]
    for a in range(n):
        for b in range(j):
            src = hm[a, b].astype(np.float32)
            origin_max = float(src.max())
            padded = cv2.copyMakeBorder(src, border, border, border, border, cv2.BORDER_CONSTANT, value=0.0)
            blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
            peak = float(blurred.max())
            out[a, b] = blurred * (origin_max / peak) if peak > 0 else blurred
    np.maximum(out, 1e-10, out=out)
    np.log(out, out=out)
    return out


def _refine_quarter(hm: np.ndarray, coords: np.ndarray) -> np.ndarray:
    h, w = hm.shape[2:]
    px = np.floor(coords[..., 0] + 0.5).astype(np.int64)
    py = np.floor(coords[..., 1] + 0.5).astype(np.int64)
    ok = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    ni, ji = np.nonzero(ok)
    x, y = px[ok], py[ok]
    dx = hm[ni, ji, y, x + 1] - hm[ni, ji, y, x - 1]
    dy = hm[ni, ji, y + 1, x] - hm[ni, ji, y - 1, x]
    out = coords.copy()
    out[ni, ji] += np.sign(np.stack([dx, dy], axis=-1)).astype(np.float32) * 0.25
    return out


def _refine_dark(hm: np.ndarray, coords: np.ndarray, kernel: int) -> np.ndarray:
    h, w = hm.shape[2:]
    lg = _modulate(hm, kernel)
    px = coords[..., 0].astype(np.int64)
    py = coords[..., 1].astype(np.int64)
    ok = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    ni, ji = np.nonzero(ok)
    x, y = px[ok], py[ok]

    def at(dy: int, dx: int) -> np.ndarray:
        return lg[ni, ji, y + dy, x + dx]

    c = at(0, 0)
    gx = 0.5 * (at(0, 1) - at(0, -1))
    gy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    dyy = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    det = dxx * dyy - dxy**2
    good = det != 0
    safe = np.where(good, det, 1.0)
    # offset = -H^-1 g with H = [[dxx, dxy], [dxy, dyy]]
    ox = -(dyy * gx - dxy * gy) / safe
    oy = -(-dxy * gx + dxx * gy) / safe
    out = coords.astype(np.float64)
    out[ni[good], ji[good], 0] += ox[good]
    out[ni[good], ji[good], 1] += oy[good]
    return out.astype(np.float32)


def heatmaps_to_keypoints(
    heatmaps: np.ndarray,
    centers: np.ndarray | Sequence[Sequence[float]],
    scales: np.ndarray | Sequence[Sequence[float]],
    refine: Refine = "quarter",
    sigma: float = 2.0,
    blur_kernel: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps [N, J, h, w] -> image keypoints [N, J, 2] and scores [N, J] (canonical ``get_final_preds``).

    ``refine``: "quarter" moves the argmax a quarter pixel toward the higher neighbour (canonical),
    "dark" uses DARK's Taylor expansion on the Gaussian-modulated log-heatmap (kernel from ``sigma``
    unless ``blur_kernel`` is given), "none" keeps the integer argmax. Scores are the raw peak values.
    """
    hm = _check_heatmaps(heatmaps)
    n, _, h, w = hm.shape
    c = _as_pairs(centers, "centers", n)
    s = _as_pairs(scales, "scales", n)
    if not np.all(s > 0):
        raise DataError("scales must be positive")
    coords, maxvals = get_max_preds(hm)
    if refine == "quarter":
        coords = _refine_quarter(hm, coords)
    elif refine == "dark":
        kernel = blur_kernel if blur_kernel is not None else dark_kernel_size(sigma)
        if kernel < 3 or kernel % 2 == 0:
            raise DataError(f"the DARK blur kernel must be an odd size >= 3, got {kernel}")
        coords = _refine_dark(hm, coords, kernel)
    elif refine != "none":
        raise DataError(f"unknown refine mode {refine!r}: use 'quarter', 'dark' or 'none'")
    keypoints = np.empty(coords.shape, dtype=np.float32)
    for i in range(n):
        trans = get_affine_transform(c[i], s[i], (w, h), inv=True)
        keypoints[i] = affine_transform_points(coords[i], trans)
    return keypoints, maxvals[..., 0]


# --------------------------------------------------------------------------------------------------
# flip test


def flip_clip(clip: np.ndarray) -> np.ndarray:
    """Mirror a clip ([..., 3, H, W] or any [..., W] array) horizontally, for the flip test."""
    arr = np.asarray(clip)
    if arr.ndim < 3:
        raise DataError(f"clip must be at least [3, H, W], got shape {arr.shape}")
    return np.ascontiguousarray(arr[..., ::-1])


def flip_back_heatmaps(
    heatmaps: np.ndarray,
    flip_pairs: Sequence[tuple[int, int]] = FLIP_PAIRS,
    shift: bool = True,
) -> np.ndarray:
    """Undo the flip on heatmaps predicted for a flipped input: mirror, swap left/right channels.

    ``shift`` moves the result one pixel right as the canonical code does (``SHIFT_HEATMAP``): with
    its centre-at-w/2 convention a mirrored image pixel lands 3/4 heatmap pixel left of the original,
    and the shift leaves 1/4 pixel to the right instead. Accepts [N, J, h, w] or [J, h, w].
    """
    hm = np.asarray(heatmaps)
    if hm.ndim not in (3, 4):
        raise DataError(f"heatmaps must be [N, J, h, w] or [J, h, w], got shape {hm.shape}")
    num_joints = hm.shape[-3]
    perm = list(range(num_joints))
    for a, b in flip_pairs:
        if not (0 <= a < num_joints and 0 <= b < num_joints):
            raise DataError(f"flip pair ({a}, {b}) is out of range for {num_joints} joints")
        perm[a], perm[b] = b, a
    out = np.ascontiguousarray(hm[..., perm, :, ::-1])
    if shift:
        out[..., 1:] = out[..., :-1].copy()
    return out


def merge_flip(
    heatmaps: np.ndarray,
    flipped_heatmaps: np.ndarray,
    flip_pairs: Sequence[tuple[int, int]] = FLIP_PAIRS,
    shift: bool = True,
) -> np.ndarray:
    """Average the heatmaps of a clip with those the model gave for ``flip_clip(clip)``.

    ``flipped_heatmaps`` is the model's raw output on the flipped clip; it is flipped back here.
    """
    hm = np.asarray(heatmaps)
    fl = np.asarray(flipped_heatmaps)
    if hm.shape != fl.shape:
        raise DataError(f"heatmaps {hm.shape} and flipped heatmaps {fl.shape} must have the same shape")
    return (hm + flip_back_heatmaps(fl, flip_pairs, shift)) * 0.5


# --------------------------------------------------------------------------------------------------
# training targets


def render_gaussian(
    center_xy: Sequence[float], heatmap_size: Sequence[int], sigma: float = 2.0
) -> np.ndarray:
    """Unnormalised Gaussian (peak 1 at the exact sub-pixel ``center_xy``) on an (h, w) grid."""
    h, w = _as_size(heatmap_size, "heatmap_size (h, w)")
    if not sigma > 0:
        raise DataError(f"sigma must be positive, got {sigma}")
    cx, cy = (float(v) for v in center_xy)
    xs = np.arange(w, dtype=np.float32) - np.float32(cx)
    ys = np.arange(h, dtype=np.float32) - np.float32(cy)
    k = np.float32(-0.5 / (sigma * sigma))
    return np.exp(ys[:, None] ** 2 * k) * np.exp(xs[None, :] ** 2 * k)


def gaussian_heatmap(
    joints_xy: np.ndarray,
    visibility: np.ndarray,
    heatmap_size: Sequence[int],
    sigma: float = 2.0,
    unbiased: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Target [J, h, w] and weights [J] from joints in heatmap coordinates (canonical ``generate_target``).

    The canonical target rounds the centre to a pixel and cuts the Gaussian at 3 sigma; joints whose
    window falls outside the map get weight 0. ``unbiased=True`` keeps the sub-pixel centre (DARK's
    unbiased encoding) with the same window and weights.
    """
    joints = _as_pairs(joints_xy, "joints_xy")
    num_joints = joints.shape[0]
    vis = np.asarray(visibility, dtype=np.float32).reshape(-1)
    if vis.shape != (num_joints,):
        raise DataError(f"visibility must have {num_joints} entries (one per joint), got {vis.shape}")
    h, w = _as_size(heatmap_size, "heatmap_size (h, w)")
    if not sigma > 0:
        raise DataError(f"sigma must be positive, got {sigma}")
    target = np.zeros((num_joints, h, w), dtype=np.float32)
    weight = (vis > 0).astype(np.float32)
    tmp_size = sigma * 3
    for j in range(num_joints):
        mu_x = int(joints[j, 0] + 0.5)
        mu_y = int(joints[j, 1] + 0.5)
        ul = (int(mu_x - tmp_size), int(mu_y - tmp_size))
        br = (int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1))
        if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
            weight[j] = 0.0
            continue
        if weight[j] <= 0.5:
            continue
        x0, x1 = max(0, ul[0]), min(br[0], w)
        y0, y1 = max(0, ul[1]), min(br[1], h)
        if unbiased:
            cx, cy = joints[j, 0], joints[j, 1]
        else:
            cx, cy = float(mu_x), float(mu_y)
        xs = np.arange(x0, x1, dtype=np.float32) - np.float32(cx)
        ys = np.arange(y0, y1, dtype=np.float32) - np.float32(cy)
        g = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / np.float32(2 * sigma * sigma))
        target[j, y0:y1, x0:x1] = g
    return target, weight
