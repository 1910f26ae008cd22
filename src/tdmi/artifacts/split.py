"""Naming of a split export: the ``*.backbone.onnx`` / ``*.head.onnx`` pair and the head's inputs.

``tdmi-export onnx --split`` writes the pair and the runtime finds it beside a model, so both
sides take the names from here.
"""

from __future__ import annotations

from pathlib import Path

SPLIT_SUFFIXES = (".backbone.onnx", ".head.onnx")
HEAD_INPUTS = ("stage1", "stage2", "stage3", "stage4")


def split_paths(path: str | Path) -> tuple[Path, Path]:
    """The backbone and head files of a split export, from either of them or the ``-o`` name given."""
    p = Path(path)
    name = p.name
    for suffix in (*SPLIT_SUFFIXES, ".onnx"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + SPLIT_SUFFIXES[0]), p.with_name(name + SPLIT_SUFFIXES[1])
