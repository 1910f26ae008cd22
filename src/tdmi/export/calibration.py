"""Calibration clips for FP16 overflow checks and INT8 ranges, saved as ``.npz``.

Ranges decided on the wrong data are silently wrong, so a set always says where it came from and
whether it is only good for smoke tests (the built-in procedurally generated clips).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tdmi.errors import DataError
from tdmi.spec.config import TDMIConfig, resolve_config
from tdmi.spec.normalization import IMAGENET_MEAN, IMAGENET_STD
from tdmi.utils import atomic_path

log = logging.getLogger(__name__)

SMOKE_WARNING = (
    "calibrating on the built-in sample clips: this calibration is for SMOKE TESTS ONLY "
    "(synthetic images); pass --calib with a PoseTrack folder for a deployable FP16/INT8 model"
)


class CalibrationWarning(UserWarning):
    """Calibration data that will probably give wrong FP16/INT8 ranges."""


NORMALISATION = "(pixel / 255 - mean) / std with the ImageNet mean/std, RGB"
# Normalised pixels of a real image lie in [(0 - mean) / std, (1 - mean) / std] per channel.
_LOW = (0.0 - IMAGENET_MEAN) / IMAGENET_STD
_HIGH = (1.0 - IMAGENET_MEAN) / IMAGENET_STD
RANGE_SLACK = 0.05  # interpolation / resampling overshoot
MAX_OUT_OF_RANGE = 0.001  # share of values outside the normalised range that is still plausible
DEFAULT_CALIB_CLIPS = 32  # clips drawn from a PoseTrack folder when the caller does not say
MIN_CLIPS = 16  # fewer clips give INT8 ranges that depend on the particular clips drawn


def check_calibration_clips(clips: np.ndarray, source: str, smoke_only: bool = False) -> list[str]:
    """Problems of a float calibration set, compared with what the model's normalisation produces.

    Raises for data that cannot be normalised images (raw 0..255 values); returns warnings for the
    rest: values outside the normalised range, per-channel statistics far from normalised images,
    too few clips.
    """
    lo, hi = float(clips.min()), float(clips.max())
    if hi > 20.0 or lo < -20.0:
        raise DataError(
            f"calibration clips from {source} range {lo:.3g}..{hi:.3g}, but normalised frames lie within "
            f"{_LOW.min():.2f}..{_HIGH.max():.2f}: these look like raw pixel values; normalise them as "
            f"{NORMALISATION}"
        )
    problems: list[str] = []
    per_channel = clips.transpose(2, 0, 1, 3, 4).reshape(3, -1)
    outside = (per_channel < (_LOW - RANGE_SLACK)[:, None]) | (per_channel > (_HIGH + RANGE_SLACK)[:, None])
    share = float(outside.mean())
    if share > MAX_OUT_OF_RANGE:
        problems.append(
            f"{100 * share:.1f}% of the calibration values from {source} are outside the normalised "
            f"range {_LOW.min():.2f}..{_HIGH.max():.2f} (clipped away by any real frame): check that "
            f"they are normalised as {NORMALISATION}"
        )
    mean, std = per_channel.mean(axis=1), per_channel.std(axis=1)
    odd = [c for c in range(3) if abs(mean[c]) > 1.5 or not 0.4 < std[c] < 2.5]
    if odd:
        stats = ", ".join(f"channel {c}: mean {mean[c]:.2f} std {std[c]:.2f}" for c in odd)
        problems.append(
            f"calibration clips from {source} have per-channel statistics unlike normalised frames "
            f"({stats}; expected mean within +-1.5, std 0.4..2.5): not normalised as the model "
            "expects, or blank frames?"
        )
    if not smoke_only and clips.shape[0] < MIN_CLIPS:
        problems.append(
            f"only {clips.shape[0]} calibration clips from {source}: INT8 ranges from so few depend on "
            f"the clips drawn; use at least {MIN_CLIPS} (--num-clips / --calib-clips)"
        )
    return problems


@dataclass
class CalibrationSet:
    """Preprocessed clips [N, T, 3, H, W] float32, ready to feed the ``frames`` input."""

    clips: np.ndarray
    source: str
    smoke_only: bool

    def __post_init__(self) -> None:
        c = np.asarray(self.clips)
        if c.ndim != 5 or c.shape[2] != 3 or c.shape[0] < 1:
            raise DataError(f"calibration clips must be [N, T, 3, H, W] with N >= 1, got shape {c.shape}")
        if not np.issubdtype(c.dtype, np.floating):
            raise DataError(
                f"calibration clips from {self.source} are {c.dtype} (raw pixels?): they must be float32 "
                f"normalised as the model's input, {NORMALISATION} (tdmi.data.transforms, tdmi-export calib)"
            )
        if not np.isfinite(c).all():
            raise DataError(f"calibration clips from {self.source} contain NaN or infinite values")
        self.clips = np.ascontiguousarray(c, dtype=np.float32)
        for problem in check_calibration_clips(self.clips, self.source, smoke_only=self.smoke_only):
            warnings.warn(problem, CalibrationWarning, stacklevel=3)

    @property
    def num_clips(self) -> int:
        return int(self.clips.shape[0])

    def check_fits(self, config: TDMIConfig) -> None:
        want = (config.num_frames, 3, *config.input_size)
        if tuple(self.clips.shape[1:]) != want:
            raise DataError(
                f"calibration clips are {tuple(self.clips.shape[1:])} per clip, {config.name} takes {want}: "
                "build the set for this config (tdmi-export calib --config ...)"
            )

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "num_clips": self.num_clips, "smoke_only": self.smoke_only}

    def save(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        meta = json.dumps({"source": self.source, "smoke_only": self.smoke_only})
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            np.savez(f, frames=self.clips, meta=np.array(meta))
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CalibrationSet:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"calibration file {p} not found")
        try:
            with np.load(p, allow_pickle=False) as data:
                if "frames" not in data.files:
                    raise DataError(
                        f"{p} has no 'frames' array: not a tdmi calibration set (tdmi-export calib)"
                    )
                clips = data["frames"]
                meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
        except DataError:
            raise
        except Exception as e:  # zipfile / pickle / value errors from a damaged or foreign file
            raise DataError(f"{p} is not a readable .npz calibration set ({type(e).__name__}: {e})") from None
        return cls(
            clips=clips,
            source=str(meta.get("source", str(p))),
            smoke_only=bool(meta.get("smoke_only", False)),
        )


def _posetrack_clips(
    config: TDMIConfig, root: Path, num_clips: int, boxes: Literal["gt"] | Path, split: str, seed: int
) -> np.ndarray:
    import cv2

    from tdmi.data.posetrack import iter_samples, load_detections, load_split
    from tdmi.data.transforms import crop_clip

    data = load_split(root, split)
    box_source: Any = "gt" if boxes == "gt" else load_detections(Path(boxes))
    samples = list(iter_samples(data, box_source))
    if not samples:
        raise DataError(f"no person boxes found in {root} ({split} split): check the annotations")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(samples))
    clips: list[np.ndarray] = []
    substituted = 0
    for i in order:
        if len(clips) == num_clips:
            break
        s = samples[int(i)]
        try:
            paths = s.clip_paths(config.num_frames, missing="error")
        except DataError:  # a partial download: as --missing-frames nearest, and said below
            paths = s.clip_paths(config.num_frames, missing="nearest")
            substituted += 1
        read = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
        frames = [f for f in read if f is not None]
        if len(frames) != len(read):
            log.warning("skipping a clip of %s: a frame cannot be read", s.video.name)
            continue
        clip, _ = crop_clip(frames, s.bbox_xywh, config.input_size, padding=config.bbox_padding)
        clips.append(clip)
    if not clips:
        raise DataError(f"no readable clips in {root}: check that the frames exist under the image root")
    if len(clips) < num_clips:
        log.warning("only %d of the %d requested calibration clips are available", len(clips), num_clips)
    if substituted:
        warnings.warn(
            f"{substituted} of {len(clips)} calibration clips from {root} use the nearest frame on disk for "
            "neighbouring frames missing from the folder (a partial download; as --missing-frames nearest)",
            stacklevel=3,
        )
    return np.stack(clips)


def build_calibration_set(
    config: TDMIConfig | str,
    data: Path | str | None = None,
    num_clips: int = 32,
    boxes: Literal["gt"] | Path | str = "gt",
    *,
    split: str = "val",
    seed: int = 0,
) -> CalibrationSet:
    """Clips from a PoseTrack-layout folder (GT boxes or a detections JSON), or the built-in samples."""
    cfg = resolve_config(config)
    if num_clips < 1:
        raise DataError(f"num_clips must be at least 1, got {num_clips}")
    if data is None:
        from tdmi.data.sample import sample_clips

        warnings.warn(SMOKE_WARNING, stacklevel=2)
        clips, _ = sample_clips(num_clips, cfg.input_size, cfg.num_frames, seed=seed)
        return CalibrationSet(clips=clips, source="built-in sample clips", smoke_only=True)
    root = Path(data)
    if not root.exists():
        raise DataError(
            f"calibration data {root} not found: give a PoseTrack folder or omit it for smoke tests"
        )
    box_arg: Literal["gt"] | Path = "gt" if str(boxes) == "gt" else Path(boxes)
    clips = _posetrack_clips(cfg, root, num_clips, box_arg, split, seed)
    what = "GT boxes" if box_arg == "gt" else f"detections {box_arg}"
    return CalibrationSet(clips=clips, source=f"PoseTrack {root} ({split}, {what})", smoke_only=False)


def load_calibration(
    config: TDMIConfig, calib: CalibrationSet | Path | str | None, num_clips: int = DEFAULT_CALIB_CLIPS
) -> CalibrationSet:
    """``--calib`` as given: a set, an ``.npz``, a PoseTrack folder, or nothing (smoke test).

    The one calibration loader: every set, however it came, is checked against ``config`` (clips
    of another input size or clip length would calibrate ranges the model never sees).
    """
    if isinstance(calib, CalibrationSet):
        cs = calib
    elif calib is None:
        cs = build_calibration_set(config, None, num_clips)
    elif Path(calib).is_dir():
        cs = build_calibration_set(config, Path(calib), num_clips)
    else:
        cs = CalibrationSet.load(calib)
    cs.check_fits(config)
    if cs.smoke_only and not (calib is None or isinstance(calib, CalibrationSet)):
        warnings.warn(f"{calib}: {SMOKE_WARNING}", stacklevel=2)
    return cs
