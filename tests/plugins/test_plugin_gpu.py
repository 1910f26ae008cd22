"""The shipped PTX on a real GPU (cuda-python launcher, same launch arithmetic as TensorRT)."""

from __future__ import annotations

import numpy as np
import pytest

from tdmi.plugins import ptx
from tdmi.plugins.availability import compute_capability
from tdmi.plugins.temporal_diff import temporal_diff_reference

pytestmark = pytest.mark.cuda  # a GPU seen by the driver and by PyTorch (tests/conftest.py)

SHAPES = [
    (2, 3, 3, 5, 7),  # plane 105: scalar path, short tail slot
    (1, 5, 4, 8, 8),  # T=5, plane 256: vector path
    (3, 2, 1, 1, 1),  # one element per frame
    (2, 3, 2, 3, 2),  # plane 12: vector for FP32, scalar for FP16
    (2, 3, 48, 96, 72),  # W48 stage 2-4 feature, two clips
    (1, 3, 256, 96, 72),  # W48 stage 1 feature
]


def expected(x_host: np.ndarray, num_frames: int) -> np.ndarray:
    if x_host.dtype == np.float16:  # correctly rounded half subtraction
        return temporal_diff_reference(x_host.astype(np.float64), num_frames).astype(np.float16)
    return temporal_diff_reference(x_host, num_frames)


def check(y_host: np.ndarray, ref: np.ndarray) -> None:
    if ref.dtype == np.float32:
        np.testing.assert_array_equal(y_host, ref)  # IEEE subtraction: bit-exact
    else:
        got, want = y_host.astype(np.float32), ref.astype(np.float32)
        np.testing.assert_allclose(got, want, rtol=2**-10, atol=2**-24)


@pytest.mark.parametrize(("b", "t", "c", "h", "w"), SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_kernel_matches_reference(b: int, t: int, c: int, h: int, w: int, dtype: str) -> None:
    import torch

    from tdmi.plugins.launch import run_temporal_diff

    gen = torch.Generator(device="cuda").manual_seed(b * 131 + t * 17 + c)
    x = torch.randn((b * t, c, h, w), device="cuda", dtype=getattr(torch, dtype), generator=gen)
    y = run_temporal_diff(x, t)
    torch.cuda.synchronize()
    assert tuple(y.shape) == (b, (t - 1) * c, h, w) and y.dtype == x.dtype
    check(y.cpu().numpy(), expected(x.cpu().numpy(), t))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_misaligned_input_takes_scalar_path_correctly(dtype: str) -> None:
    import torch

    from tdmi.plugins.launch import run_temporal_diff

    b, t, c, h, w = 2, 3, 4, 4, 8  # plane 128: vectorisable if it were aligned
    n = b * t * c * h * w
    buf = torch.randn(n + 1, device="cuda", dtype=getattr(torch, dtype))
    x = buf[1:].view(b * t, c, h, w)  # 2 or 4 bytes off a 16-byte boundary
    assert x.data_ptr() % 16 != 0
    out = torch.full((b, (t - 1) * c, h, w), float("nan"), device="cuda", dtype=x.dtype)
    y = run_temporal_diff(x, t, out=out)
    torch.cuda.synchronize()
    assert y.data_ptr() == out.data_ptr()
    check(y.cpu().numpy(), expected(x.cpu().numpy(), t))


def test_launcher_uses_the_ptx_selected_for_this_gpu() -> None:
    from tdmi.plugins.launch import load_module

    assert load_module(0).arch == ptx.select_arch(compute_capability(0))


def test_launcher_rejects_bad_inputs() -> None:
    import torch

    from tdmi.plugins.launch import run_temporal_diff

    with pytest.raises(ValueError, match="FP32 and FP16"):
        run_temporal_diff(torch.zeros((6, 2, 2, 2), device="cuda", dtype=torch.float64), 3)
    with pytest.raises(ValueError, match="contiguous"):
        run_temporal_diff(torch.zeros((6, 2, 2, 4), device="cuda").transpose(2, 3), 3)
    with pytest.raises(ValueError, match="multiple"):
        run_temporal_diff(torch.zeros((7, 2, 2, 2), device="cuda"), 3)
    with pytest.raises(TypeError, match="CUDA"):
        run_temporal_diff(torch.zeros((6, 2, 2, 2)), 3)
