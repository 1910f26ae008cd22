"""Section 5, DCN forms: ``torchvision.ops.deform_conv2d`` against the decomposed GridSample form.

Time and error of each form at the configuration's motion branch size, FP32 (and FP16 on CUDA),
against torchvision in strict FP32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial
from typing import Any

from tdmi.gpukit.measure import require_torch_cuda, strict_fp32, time_calls
from tdmi.gpukit.options import DCN_IMPORT, TOY_PRESET, W48_PRESET, Options, SectionSkipped
from tdmi.gpukit.record import Recorder, one_line


def load_decomposed_dcn() -> Callable[..., Any]:
    """The decomposed (GridSample) DCN, if this checkout has it; SectionSkipped says why not."""
    try:
        from tdmi.model.dcn import deform_conv2d_decomposed
    except ImportError as e:
        raise SectionSkipped(f"{DCN_IMPORT} is not available in this checkout ({one_line(e)})") from None
    return deform_conv2d_decomposed


def _operands(cfg: Any, b: int, seed: int, device: str) -> list[Any]:
    """(x, offsets, weight, bias, mask) in FP32 for batch ``b``: offsets N(0, 2 px), mask sigmoid(N(0, 1))."""
    import torch

    c, k, og = cfg.resolved_motion_channels, cfg.dcn_kernel, cfg.dcn_offset_groups
    h, w = cfg.heatmap_size
    gen = torch.Generator().manual_seed(seed + b)
    x32 = torch.randn((b, c, h, w), generator=gen).to(device)
    off32 = (2 * torch.randn((b, 2 * og * k * k, h, w), generator=gen)).to(device)
    mask32 = torch.sigmoid(torch.randn((b, og * k * k, h, w), generator=gen)).to(device)
    w32 = (torch.randn((c, c, k, k), generator=gen) / (c * k * k) ** 0.5).to(device)
    b32 = (0.1 * torch.randn(c, generator=gen)).to(device)
    return [x32, off32, w32, b32, mask32]


def _time_form(
    call: Callable[[], Any], dt: str, ref: Any, scale: float, cuda: bool, reps: tuple[int, int, float]
) -> dict[str, Any]:
    """One form's per-call time and its largest error against the FP32 torchvision reference."""
    import torch

    ctx = strict_fp32() if dt == "fp32" else contextlib.nullcontext()
    with ctx, torch.inference_mode():
        y = call()
        out: dict[str, Any] = dict(time_calls(call, cuda, *reps))
    err = (y.float() - ref).abs().max().item()
    out.update(max_abs_err=err, max_rel_err=err / scale if scale else None)
    return out


def section_dcn_forms(opts: Options, rec: Recorder, decomposed: Callable[..., Any] | None = None) -> None:
    fn = decomposed if decomposed is not None else load_decomposed_dcn()
    import torch
    from torchvision.ops import deform_conv2d

    from tdmi.model import get_preset

    cuda = opts.cuda
    if cuda:
        require_torch_cuda()
    device = "cuda" if cuda else "cpu"
    cfg = get_preset(TOY_PRESET if opts.quick else W48_PRESET)
    k = cfg.dcn_kernel
    batches = [1, 2] if opts.quick else [1, 8, 32]
    dtypes = ["fp32", "fp16"] if cuda else ["fp32"]
    reps = (1, 3, 1.0) if opts.quick else (3, 30, 2.0)
    rec.set(
        "setup",
        {
            "config": cfg.name,
            "channels": cfg.resolved_motion_channels,
            "kernel": k,
            "feature": list(cfg.heatmap_size),
            "offset_groups": cfg.dcn_offset_groups,
            "offsets": "N(0, 2 px), mask sigmoid(N(0, 1))",
            "reference": "torchvision.ops.deform_conv2d in FP32",
        },
    )
    pad = (k // 2, k // 2)
    for b in batches:
        x32, off32, w32, b32, mask32 = _operands(cfg, b, opts.seed, device)
        with strict_fp32(), torch.inference_mode():
            ref = deform_conv2d(x32, off32, w32, b32, padding=pad, mask=mask32)
        scale = float(ref.abs().max())
        for dt in dtypes:
            tdt = torch.float16 if dt == "fp16" else torch.float32
            x, off, wt, bias, mask = (t.to(tdt) for t in (x32, off32, w32, b32, mask32))
            calls: dict[str, Callable[[], Any]] = {
                "torchvision": partial(deform_conv2d, x, off, wt, bias, padding=pad, mask=mask),
                "decomposed": partial(
                    fn, x, off, wt, bias, stride=(1, 1), padding=pad, dilation=(1, 1), mask=mask
                ),
            }
            for form, call in calls.items():
                run = partial(_time_form, call, dt, ref, scale, cuda, reps)
                rec.row("rows", {"batch": b, "dtype": dt, "form": form}, run, need_s=1.0)
    rows = rec.data.get("rows", [])
    times = {(r["batch"], r["dtype"], r["form"]): r.get("p50_ms") for r in rows if r["status"] == "ok"}
    for r in rows:
        tv = times.get((r["batch"], r["dtype"], "torchvision"))
        if r["status"] == "ok" and tv:
            r["time_vs_torchvision"] = r["p50_ms"] / tv
    rec.flush()
