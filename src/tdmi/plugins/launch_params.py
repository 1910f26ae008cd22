"""Launch arithmetic of the TemporalDiff kernel, in one place and free of CUDA/TensorRT imports.

The TensorRT AOT implementation (with symbolic shape expressions), the cuda-python launcher
(with ints) and the coverage test all call the functions below, so the grid TensorRT bakes into
an engine is the grid the GPU test and the benchmark launch. The kernel itself
(``csrc/temporal_diff.cu``) documents the same mapping: thread ``t`` handles clip
``t // nvec`` and the ``VEC`` plane positions starting at ``(t % nvec) * VEC``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

BLOCK_SIZE = 256  # threads per block; the kernels declare __launch_bounds__(256)
VECTOR_BYTES = 16  # one float4 / 8 halves per vectorised access
KERNEL_NAMES: dict[str, str] = {"float32": "temporal_diff_f32", "float16": "temporal_diff_f16"}
# PTX parameter list of every entry point: x, num_clips, num_frames, plane, y (see the .cu ABI).
KERNEL_PARAM_TYPES: tuple[str, ...] = ("u64", "u32", "u32", "u32", "u64")
INT32_MAX = 2**31 - 1


class _Multipliable(Protocol):
    """An int, or a TensorRT shape expression: both multiply (``tensorrt.plugin`` overloads ``*``)."""

    def __mul__(self, other: Any, /) -> Any: ...


E = TypeVar("E", bound=_Multipliable)


def dtype_key(dtype: Any) -> str:
    """Normalise numpy/torch/str dtypes to ``"float32"`` or ``"float16"`` (the kernels we have)."""
    name = str(dtype).removeprefix("torch.")
    if name in ("float", "float32", "fp32", "FLOAT"):
        return "float32"
    if name in ("half", "float16", "fp16", "FLOAT16"):
        return "float16"
    with contextlib.suppress(TypeError):
        name = np.dtype(dtype).name
    if name in KERNEL_NAMES:
        return name
    raise ValueError(f"TemporalDiff has FP32 and FP16 kernels only, got dtype {dtype}")


def itemsize(dtype: Any) -> int:
    return 4 if dtype_key(dtype) == "float32" else 2


def vector_width(dtype: Any) -> int:
    """Elements per thread slot: 4 for FP32 (float4), 8 for FP16 (4 x half2)."""
    return VECTOR_BYTES // itemsize(dtype)


def kernel_name(dtype: Any) -> str:
    return KERNEL_NAMES[dtype_key(dtype)]


def int_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def slots_per_plane(plane: E, vec: int, cdiv: Callable[[E, int], E]) -> E:
    """``ceil(plane / vec)``: thread slots covering one frame plane of one clip."""
    return cdiv(plane, vec)


def grid_size(num_clips: E, plane: E, vec: int, cdiv: Callable[[Any, int], E], block: int = BLOCK_SIZE) -> E:
    """Blocks needed for ``num_clips * ceil(plane / vec)`` threads.

    ``cdiv`` is :func:`int_cdiv` for concrete launches and ``tensorrt.plugin.cdiv`` for the
    symbolic expressions of the AOT implementation; the formula is shared, not duplicated.
    """
    return cdiv(num_clips * slots_per_plane(plane, vec, cdiv), block)


def uses_vector_path(plane: int, dtype: Any, x_ptr: int, y_ptr: int) -> bool:
    """The kernel's own (grid-uniform) choice between 16-byte and scalar accesses."""
    return plane % vector_width(dtype) == 0 and (x_ptr | y_ptr) % VECTOR_BYTES == 0


@dataclass(frozen=True)
class LaunchConfig:
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    num_clips: int
    num_frames: int
    plane: int
    vec: int

    @property
    def scalar_args(self) -> tuple[int, int, int]:
        """The int32 arguments between the input and output pointers, in ABI order."""
        return self.num_clips, self.num_frames, self.plane

    @property
    def threads(self) -> int:
        return self.grid[0] * self.block[0]


def launch_config(input_shape: tuple[int, ...], num_frames: int, dtype: Any) -> LaunchConfig:
    """Concrete launch for an input of shape ``[B*T, C, h, w]`` (int32 limits checked)."""
    from tdmi.plugins.temporal_diff import output_shape

    num_clips = output_shape(input_shape, num_frames)[0]
    _, c, h, w = (int(d) for d in input_shape)
    plane = c * h * w
    vec = vector_width(dtype)
    if plane > INT32_MAX or num_clips > INT32_MAX:
        raise ValueError(f"plane={plane} / clips={num_clips} exceed the kernel's int32 parameters")
    blocks = grid_size(num_clips, plane, vec, int_cdiv)
    if blocks > INT32_MAX:
        raise ValueError(f"{blocks} blocks exceed the CUDA grid limit")
    return LaunchConfig(
        kernel=kernel_name(dtype),
        grid=(max(int(blocks), 0), 1, 1),
        block=(BLOCK_SIZE, 1, 1),
        shared_mem=0,
        num_clips=num_clips,
        num_frames=int(num_frames),
        plane=plane,
        vec=vec,
    )


def bytes_moved(input_shape: tuple[int, ...], num_frames: int, dtype: Any) -> int:
    """Minimum DRAM traffic of TemporalDiff: read the input once, write the output once."""
    from tdmi.plugins.temporal_diff import output_shape

    out = output_shape(input_shape, num_frames)
    n_in = int(np.prod(input_shape))
    n_out = int(np.prod(out))
    return (n_in + n_out) * itemsize(dtype)
