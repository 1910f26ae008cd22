"""Heatmap-to-keypoint decoding choices (torch-free, numpy-free: the CLI types its options with them)."""

from __future__ import annotations

from typing import Literal, get_args

# quarter: the classic quarter-pixel shift toward the higher neighbour; dark: DARK's Taylor
# refinement on a smoothed heatmap; none: the arg-max cell.
Refine = Literal["quarter", "dark", "none"]
REFINES: tuple[Refine, ...] = get_args(Refine)
