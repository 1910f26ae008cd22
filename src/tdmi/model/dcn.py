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

This module imports only torch, so other tools (GPU timing kits) can use it on its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IMPLEMENTATIONS = ("native", "decomposed")


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
