"""DCN v2 (modulated deformable convolution) written with standard ops only.

``torchvision.ops.deform_conv2d`` exports to ONNX ``DeformConv``, which TensorRT runs only through a
plugin and TensorRT-RTX (which ships no plugin library) not at all. The same operation is one
bilinear ``grid_sample`` over the kernel taps stacked along H, a multiplication by the mask, and a
1x1 grouped convolution, all of which export to plain ONNX (``GridSample``, ``Mul``, ``Conv``).

Sampling convention (torchvision's): tap ``k = i * kw + j`` of output pixel ``(ho, wo)`` in offset
group ``g`` reads the input at ``y = ho * sh - ph + i * dh + offset[:, g*2K + 2k]`` and
``x = wo * sw - pw + j * dw + offset[:, g*2K + 2k + 1]``, bilinearly, with zeros outside the map.
``grid_sample(align_corners=False)`` addresses pixel ``p`` of a size-``S`` axis at
``(2p + 1) / S - 1``, which also holds for ``S == 1``; its zero padding drops each out-of-range
corner exactly as torchvision does.

Offset guard (:func:`guard_offsets`, :func:`deform_conv2d_guarded`): torchvision's CPU kernel turns a
NaN sampling position into a memory index and crashes the process (segfault), which a checkpoint with
finite but huge weights reaches. A sample at or beyond one pixel outside the map is zero in every
form (bilinear, zeros outside), so clamping each offset to a bound that keeps it at least that far
outside changes nothing: offsets within the bound are passed through untouched (bit-identical
results) and offsets beyond it, +-Inf included, contribute zero before and after. NaN has no
position; its output pixels are NaN, as the decomposed form gives, so a broken model is not hidden.

This module imports only torch, so other tools (GPU timing kits) can use it on its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IMPLEMENTATIONS = ("native", "decomposed")
__all__ = [
    "IMPLEMENTATIONS",
    "deform_conv2d_decomposed",
    "deform_conv2d_guarded",
    "guard_offsets",
    "offset_bounds",
    "sampling_base",
]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def sampling_base(
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Normalised grid of the undeformed taps, ``[1, K, Ho, Wo, 2]`` as (x, y) in grid units."""
    (h, w), (ho, wo), (kh, kw) = in_hw, out_hw, kernel
    ki = torch.arange(kh, dtype=torch.float64, device=device).repeat_interleave(kw)  # tap row
    kj = torch.arange(kw, dtype=torch.float64, device=device).repeat(kh)  # tap column
    ys = torch.arange(ho, dtype=torch.float64, device=device) * stride[0] - padding[0]
    xs = torch.arange(wo, dtype=torch.float64, device=device) * stride[1] - padding[1]
    py = ys[None, :, None] + (ki * dilation[0])[:, None, None]  # [K, Ho, 1]
    px = xs[None, None, :] + (kj * dilation[1])[:, None, None]  # [K, 1, Wo]
    gy = ((2 * py + 1) / h - 1).expand(-1, ho, wo)
    gx = ((2 * px + 1) / w - 1).expand(-1, ho, wo)
    return torch.stack([gx, gy], dim=-1)[None].to(dtype)


def deform_conv2d_decomposed(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    mask: Tensor | None = None,
) -> Tensor:
    """``torchvision.ops.deform_conv2d`` (DCN v1 without ``mask``, v2 with) as GridSample + Conv.

    Shapes as torchvision: ``input [N, Cin, H, W]``, ``offset [N, 2*G*K, Ho, Wo]``, ``weight
    [Cout, Cin/groups, kh, kw]``, ``mask [N, G*K, Ho, Wo]``, with ``K = kh*kw`` and ``G`` offset
    groups; the result is ``[N, Cout, Ho, Wo]`` in the input's dtype.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    n, cin, h, w = input.shape
    cout, cin_per_group, kh, kw = weight.shape
    k = kh * kw
    groups = cin // cin_per_group
    ho, wo = offset.shape[-2], offset.shape[-1]
    og = offset.shape[1] // (2 * k)
    if og < 1 or offset.shape[1] != 2 * og * k or cin % og or cin % cin_per_group:
        raise ValueError(
            f"deform_conv2d: offset has {offset.shape[1]} channels, input {cin}, kernel {kh}x{kw}: "
            "expected 2 * offset_groups * kh * kw offset channels dividing the input channels"
        )
    if mask is not None and mask.shape[1] != og * k:
        raise ValueError(f"deform_conv2d: mask has {mask.shape[1]} channels, expected {og * k}")
    # Offsets [N, G*K*2, Ho, Wo] as (dy, dx) pairs -> grid offsets [N*G, K, Ho, Wo, (dx, dy)].
    off = offset.reshape(-1, k, 2, ho, wo).permute(0, 1, 3, 4, 2).flip(-1)
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=offset.dtype, device=offset.device)
    base = sampling_base((h, w), (ho, wo), (kh, kw), stride, padding, dilation, offset.dtype, offset.device)
    grid = (off * scale + base).reshape(-1, k * ho, wo, 2).to(input.dtype)
    x = input.reshape(-1, cin // og, h, w)
    cols = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if mask is not None:
        cols = cols * mask.reshape(-1, 1, k * ho, wo).to(cols.dtype)
    # [N*G, Cin/G, K*Ho, Wo] -> [N, Cin*K, Ho, Wo]: channel c*K + k, the order of weight's (c, i, j).
    cols = cols.reshape(n, cin * k, ho, wo)
    return F.conv2d(cols, weight.reshape(cout, cin_per_group * k, 1, 1), bias, groups=groups)


def offset_bounds(
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[float, float]:
    """Per-axis offset bound ``(by, bx)`` past which every tap samples zero, whatever its position.

    Tap positions before the offset span ``[-p, (Ho-1)*s - p + (k-1)*d]`` on each axis. An offset
    ``o >= H + p + 1`` puts every one of them at ``>= H + 1``, and ``o <= -(pos_max + 2)`` at
    ``<= -2``: both outside the one-pixel band where bilinear sampling still reads the map (the
    extra pixel is margin). Clamping to these bounds therefore leaves every sample as it was.
    """
    bounds = []
    for size, out, k, s, p, d in zip(in_hw, out_hw, kernel, stride, padding, dilation, strict=True):
        pos_max = (out - 1) * s - p + (k - 1) * d
        bounds.append(float(max(size + p, pos_max + 1) + 1))
    return bounds[0], bounds[1]


def guard_offsets(
    offset: Tensor,
    in_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
) -> tuple[Tensor, Tensor]:
    """Offsets safe for torchvision's kernel, and the ``[N, 1, Ho, Wo]`` mask of pixels with a NaN offset.

    Finite offsets within :func:`offset_bounds` are returned untouched; larger ones and +-Inf are
    clamped to the bound (still sampling zero, see there); NaN becomes 0 here, and the caller marks
    those output pixels NaN with the returned mask.
    """
    stride, padding, dilation, kernel = _pair(stride), _pair(padding), _pair(dilation), _pair(kernel)
    out_hw = (offset.shape[-2], offset.shape[-1])
    by, bx = offset_bounds(in_hw, out_hw, kernel, stride, padding, dilation)
    # Offset channels are (dy, dx) pairs: the bound alternates between the two axes.
    bound = torch.tensor([by, bx], dtype=offset.dtype, device=offset.device).repeat(offset.shape[1] // 2)
    bound = bound.reshape(1, -1, 1, 1)
    nan = torch.isnan(offset)
    safe = torch.clamp(torch.nan_to_num(offset, nan=0.0), min=-bound, max=bound)
    return safe, nan.any(dim=1, keepdim=True)


def deform_conv2d_guarded(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    mask: Tensor | None = None,
) -> Tensor:
    """``torchvision.ops.deform_conv2d`` that cannot crash on huge or non-finite offsets.

    Bit-identical to torchvision wherever its offsets are finite and within :func:`offset_bounds`;
    beyond them the samples are zero as torchvision's own range check gives; output pixels with a
    NaN offset are NaN (all channels). The bounds are shape-derived constants, so the guard costs a
    clamp, a NaN test and a masked fill.
    """
    from torchvision.ops import deform_conv2d

    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    kernel = (weight.shape[-2], weight.shape[-1])
    safe, nan_px = guard_offsets(
        offset, (input.shape[-2], input.shape[-1]), kernel, stride, padding, dilation
    )
    out = deform_conv2d(
        input, safe, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask
    )
    return out.masked_fill(nan_px, float("nan"))
