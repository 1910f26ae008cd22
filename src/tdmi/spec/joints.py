"""Joint definitions shared by the model, pre/post-processing and the evaluator (PoseTrack order)."""

from __future__ import annotations

# PoseTrack 2018 / 2021 keypoint order (17 joints; the ears are never labelled).
POSETRACK_JOINTS: tuple[str, ...] = (
    "nose",
    "head_bottom",
    "head_top",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

# Left/right pairs swapped by the horizontal flip test.
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

NUM_JOINTS = len(POSETRACK_JOINTS)


def flip_permutation(
    num_joints: int = NUM_JOINTS, pairs: tuple[tuple[int, int], ...] = FLIP_PAIRS
) -> list[int]:
    """Index map that swaps left and right joints (used on flipped heatmaps and keypoints)."""
    perm = list(range(num_joints))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm
