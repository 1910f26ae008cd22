"""The kernel's grid arithmetic, checked by replaying its thread -> element mapping in numpy."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from tdmi.plugins import launch_params as lp
from tdmi.plugins.temporal_diff import temporal_diff_reference


def replay_kernel(x: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Execute, thread by thread, the index mapping documented in csrc/temporal_diff.cu.

    Returns the output plus per-element read counts of x and write counts of y. Uses only the
    launch configuration (grid, block, scalar args, vector width) computed by launch_params.
    """
    cfg = lp.launch_config(x.shape, num_frames, x.dtype)
    num_clips, t_frames, plane = cfg.scalar_args
    vec = cfg.vec
    xf = x.reshape(-1)
    y = np.full(num_clips * (t_frames - 1) * plane, np.nan, dtype=x.dtype)
    reads = np.zeros(xf.size, dtype=np.int64)
    writes = np.zeros(y.size, dtype=np.int64)
    nvec = -(-plane // vec)
    for t in range(cfg.grid[0] * cfg.block[0]):  # every launched thread, including idle ones
        if t >= num_clips * nvec:
            continue
        b, slot = divmod(t, nvec)
        e0 = slot * vec
        n = min(vec, plane - e0)
        lanes = np.arange(e0, e0 + n)
        xc = b * t_frames * plane
        yc = b * (t_frames - 1) * plane
        prev = xf[xc + lanes]
        reads[xc + lanes] += 1
        for k in range(1, t_frames):
            cur = xf[xc + k * plane + lanes]
            reads[xc + k * plane + lanes] += 1
            y[yc + (k - 1) * plane + lanes] = cur - prev
            writes[yc + (k - 1) * plane + lanes] += 1
            prev = cur
    return y, reads, writes


SHAPES = [
    # (B, T, C, h, w): odd planes, planes divisible by 4 but not 8, single elements, many frames,
    # more threads than one block and exactly one block (256 slots)
    (2, 3, 3, 5, 7),
    (1, 2, 1, 1, 1),
    (3, 5, 1, 1, 4),
    (2, 3, 2, 2, 6),
    (1, 9, 3, 3, 3),
    (4, 2, 8, 8, 16),
    (1, 3, 16, 8, 8),
    (5, 4, 7, 11, 3),
    (2, 3, 48, 6, 5),
]


@pytest.mark.parametrize(("b", "t", "c", "h", "w"), SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_every_element_read_once_and_written_once(
    b: int, t: int, c: int, h: int, w: int, dtype: type
) -> None:
    rng = np.random.default_rng(b + 10 * t + 100 * c + 1000 * h + 10000 * w)
    x = rng.standard_normal((b * t, c, h, w)).astype(dtype)
    y, reads, writes = replay_kernel(x, t)
    assert np.all(reads == 1), "each input element must be loaded exactly once"
    assert np.all(writes == 1), "each output element must be stored exactly once"
    np.testing.assert_array_equal(y.reshape(b, (t - 1) * c, h, w), temporal_diff_reference(x, t))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_grid_is_minimal_for_many_shapes(dtype: str) -> None:
    vec = lp.vector_width(dtype)
    for b, t, plane in itertools.product([1, 2, 3, 7, 64], [2, 3, 5], [1, 3, 4, 7, 8, 255, 256, 257, 6912]):
        cfg = lp.launch_config((b * t, plane, 1, 1), t, dtype)
        slots = b * -(-plane // vec)
        assert cfg.threads >= slots, "every slot needs a thread"
        assert (cfg.grid[0] - 1) * cfg.block[0] < slots, "no block may be entirely idle"
        assert cfg.block == (lp.BLOCK_SIZE, 1, 1) and cfg.shared_mem == 0
        assert cfg.scalar_args == (b, t, plane)


class Sym:
    """A stand-in for a TensorRT shape expression: records the formula, evaluates it later."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __mul__(self, other: Any) -> Sym:
        return Sym(lambda env: self.fn(env) * (other.fn(env) if isinstance(other, Sym) else other))

    def __floordiv__(self, other: int) -> Sym:
        return Sym(lambda env: self.fn(env) // other)


def sym_cdiv(a: Sym, b: int) -> Sym:
    return Sym(lambda env: -(-a.fn(env) // b))


def test_symbolic_grid_equals_concrete_grid() -> None:
    # The TensorRT AOT path evaluates grid_size on shape expressions with trtp.cdiv; the formula
    # must only need * and cdiv, and agree with the concrete launch for every shape.
    bt, c, h, w = (Sym(lambda env, i=i: env[i]) for i in range(4))
    for t in (2, 3, 5):
        for dtype in ("float32", "float16"):
            grid = lp.grid_size(bt // t, c * h * w, lp.vector_width(dtype), sym_cdiv)
            for shape in [(3 * t, 3, 5, 7), (t, 256, 96, 72), (8 * t, 48, 96, 72), (2 * t, 1, 1, 1)]:
                assert grid.fn(shape) == lp.launch_config(shape, t, dtype).grid[0]


def test_vector_path_predicate_matches_kernel_condition() -> None:
    assert lp.vector_width("float32") == 4 and lp.vector_width("float16") == 8
    assert lp.uses_vector_path(6912 * 48, "float32", 256, 512)
    assert not lp.uses_vector_path(105, "float32", 256, 512)  # plane not a multiple of 4
    assert lp.uses_vector_path(12, "float32", 256, 512) and not lp.uses_vector_path(12, "float16", 256, 512)
    assert not lp.uses_vector_path(64, "float32", 256 + 4, 512)  # misaligned view
    assert not lp.uses_vector_path(64, "float16", 256, 512 + 8)


def test_dtype_and_limits() -> None:
    import torch

    assert lp.kernel_name(np.float32) == "temporal_diff_f32" == lp.kernel_name(torch.float32)
    assert lp.kernel_name("fp16") == "temporal_diff_f16" == lp.kernel_name(torch.half)
    for bad in (np.float64, "bfloat16", torch.bfloat16, np.int8):
        with pytest.raises(ValueError, match="FP32 and FP16"):
            lp.kernel_name(bad)
    with pytest.raises(ValueError, match="int32"):
        lp.launch_config((3, 2**16, 2**8, 2**8), 3, "float32")
    assert lp.launch_config((0, 3, 4, 5), 3, "float32").grid == (0, 1, 1)
    assert lp.bytes_moved((6, 2, 3, 4), 3, "float16") == (6 * 24 + 2 * 2 * 24) * 2
