"""The DCN offset guard: exact where torchvision works, and no native crash where it does not.

torchvision's CPU ``deform_conv2d`` segfaults on a NaN offset, which a checkpoint with finite but huge
weights produces (issue 20, item 7). The guard clamps offsets to a bound past which every sample is
zero anyway, and marks output pixels with a NaN offset NaN. These tests check it against unguarded
torchvision (bit-equal wherever torchvision does not crash), against the decomposed form, and in
subprocesses (a segfault would take the test runner down) on the model and on ``tdmi-train``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torchvision.ops import deform_conv2d

from tdmi.model.dcn import deform_conv2d_decomposed, deform_conv2d_guarded, guard_offsets, offset_bounds
from tdmi.model.tdmi import ModulatedDeformConv

SRC = Path(__file__).resolve().parents[2] / "src"

# (N, Cin, H, W, Cout, kernel, stride, padding, dilation, groups, offset_groups), as in test_dcn.py
CASES = [
    (2, 8, 7, 5, 6, 3, (1, 1), (1, 1), (1, 1), 1, 1),  # the model's configuration
    (1, 8, 9, 11, 4, 3, (2, 2), (1, 1), (2, 2), 2, 2),  # stride, dilation, groups, offset groups
    (2, 6, 10, 7, 6, 3, (2, 1), (0, 2), (1, 2), 3, 3),  # per-axis stride / padding / dilation
    (3, 4, 1, 1, 4, 3, (1, 1), (1, 1), (1, 1), 1, 1),  # 1x1 map
]


def _inputs(case: tuple, dtype: torch.dtype, offset_scale: float = 3.0, seed: int = 0) -> dict:
    n, cin, h, w, cout, k, s, p, d, g, og = case
    gen = torch.Generator().manual_seed(seed)
    ho = (h + 2 * p[0] - d[0] * (k - 1) - 1) // s[0] + 1
    wo = (w + 2 * p[1] - d[1] * (k - 1) - 1) // s[1] + 1
    return {
        "input": torch.randn(n, cin, h, w, generator=gen, dtype=dtype),
        "offset": torch.randn(n, 2 * og * k * k, ho, wo, generator=gen, dtype=dtype) * offset_scale,
        "weight": torch.randn(cout, cin // g, k, k, generator=gen, dtype=dtype),
        "bias": torch.randn(cout, generator=gen, dtype=dtype),
        "mask": torch.rand(n, og * k * k, ho, wo, generator=gen, dtype=dtype),
        "stride": s,
        "padding": p,
        "dilation": d,
    }


def _bounds(kw: dict) -> tuple[float, float]:
    x, off, wt = kw["input"], kw["offset"], kw["weight"]
    return offset_bounds(
        (x.shape[-2], x.shape[-1]),
        (off.shape[-2], off.shape[-1]),
        (wt.shape[-2], wt.shape[-1]),
        kw["stride"],
        kw["padding"],
        kw["dilation"],
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES)
def test_normal_offsets_are_untouched_and_bit_identical(case: tuple, dtype: torch.dtype) -> None:
    kw = _inputs(case, dtype)
    safe, nan_px = guard_offsets(
        kw["offset"],
        tuple(kw["input"].shape[-2:]),
        tuple(kw["weight"].shape[-2:]),
        kw["stride"],
        kw["padding"],
        kw["dilation"],
    )
    by, bx = _bounds(kw)
    bound = torch.tensor([by, bx], dtype=dtype).repeat(safe.shape[1] // 2).reshape(1, -1, 1, 1)
    inside = kw["offset"].abs() <= bound
    assert inside.float().mean().item() > 0.5  # most within the bound (3 px for the 1x1 map)
    assert torch.equal(safe[inside], kw["offset"][inside]) and not nan_px.any()
    assert torch.equal(deform_conv2d_guarded(**kw), deform_conv2d(**kw))


@pytest.mark.parametrize("case", CASES)
def test_clamped_offsets_give_torchvisions_own_result_bit_for_bit(case: tuple) -> None:
    """Offsets spread over 3x the bound (many clamped, +-Inf and 3e38 too): torchvision unguarded
    handles finite and infinite offsets without crashing, and the guard must not change a bit."""
    kw = _inputs(case, torch.float32)
    by, bx = _bounds(kw)
    off = kw["offset"]
    gen = torch.Generator().manual_seed(1)
    spread = (torch.rand(off.shape, generator=gen) * 2 - 1) * 3
    scale = torch.tensor([by, bx]).repeat(off.shape[1] // 2).reshape(1, -1, 1, 1)
    off = spread * scale
    flat = off.view(-1)
    flat[::7] = float("inf")
    flat[3::11] = float("-inf")
    flat[5::13] = 3e38
    flat[6::17] = -1e30
    kw["offset"] = off
    clamped = (off.abs() > scale).float().mean().item()
    assert clamped > 0.5  # the case really exercises the clamp
    assert torch.equal(deform_conv2d_guarded(**kw), deform_conv2d(**kw))


def test_far_offsets_read_zeros_in_every_form() -> None:
    kw = _inputs(CASES[0], torch.float64)
    for value in (1e6, 1e30, float("inf"), float("-inf")):
        kw["offset"] = torch.full_like(kw["offset"], value)
        out = deform_conv2d_guarded(**kw)
        expected = kw["bias"][None, :, None, None].expand_as(out)  # every tap outside: only the bias
        assert torch.equal(out, expected), value
        safe, _ = guard_offsets(kw["offset"], (7, 5), (3, 3), padding=(1, 1))
        torch.testing.assert_close(
            deform_conv2d_decomposed(**{**kw, "offset": safe}), expected, atol=1e-12, rtol=0
        )


def test_bound_is_tight_enough_to_matter() -> None:
    """Just inside the bound a tap can still sit in the map's bilinear band: the bound is not loose
    guesswork but the edge of the exact region (one margin pixel)."""
    by, bx = offset_bounds((7, 5), (7, 5), (3, 3), (1, 1), (1, 1), (1, 1))
    assert (by, bx) == (9.0, 7.0)  # H + p + 1 = 9, W + p + 1 = 7 (positions span -1 .. H)
    kw = _inputs(CASES[0], torch.float64)
    off = torch.zeros_like(kw["offset"])
    off[:, 0::2] = by - 2.5  # dy only: the top taps of the top rows land at y = 5.5, inside a 7-row map
    kw["offset"] = off
    out = deform_conv2d_guarded(**kw)
    assert torch.equal(out, deform_conv2d(**kw))
    assert not torch.equal(out, kw["bias"][None, :, None, None].expand_as(out))


def test_nan_offsets_make_their_pixels_nan_like_the_decomposed_form() -> None:
    kw = _inputs(CASES[0], torch.float32)
    off = kw["offset"].clone()
    off[0, 3, 2, 2] = float("nan")
    off[1, 16, 6, 0] = float("nan")
    kw["offset"] = off
    out = deform_conv2d_guarded(**kw)
    ref = deform_conv2d_decomposed(**kw)
    assert torch.equal(out.isnan(), ref.isnan())
    assert out.isnan().sum().item() == 2 * out.shape[1]  # those two pixels, all channels
    torch.testing.assert_close(out.nan_to_num(), ref.nan_to_num(), atol=5e-4, rtol=0)


def test_model_forms_agree_on_infinite_offsets() -> None:
    """Unguarded, the decomposed form turns an infinite offset into NaN while torchvision reads zero;
    in the model both read zero."""
    torch.manual_seed(0)
    dcn = ModulatedDeformConv(4).eval()
    with torch.no_grad():
        dcn.offset_mask.bias[:18] = float("inf")  # offsets +Inf, mask unchanged
    x = torch.randn(2, 4, 6, 5)
    with torch.no_grad():
        native = dcn(x)
        dcn.impl = "decomposed"
        decomposed = dcn(x)
    expected = dcn.bias[None, :, None, None].detach().expand_as(native)
    assert torch.equal(native, expected)
    torch.testing.assert_close(decomposed, expected, atol=1e-6, rtol=0)


def _run(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_huge_finite_weights_do_not_crash_the_forward() -> None:
    """The crash of item 7: finite weights so large that activations overflow and the offset
    convolution's sums meet +Inf and -Inf: NaN offsets. Before the guard this process died with
    SIGSEGV (exit 139; checked on this test's script with the guard removed)."""
    proc = _run(
        """
        import torch
        from tdmi.model import TDMI
        torch.manual_seed(0)
        net = TDMI.from_preset("tdmi-tiny").eval()
        nan_offsets = []
        with torch.no_grad():
            for j in range(1, 5):
                stage = getattr(net.tde, f"stage{j}")
                for m in stage.blocks.modules():  # finite weights whose activations overflow to Inf
                    if isinstance(m, torch.nn.Conv2d):
                        m.weight.fill_(3e38)
                conv = stage.dcn.offset_mask
                sign = torch.ones_like(conv.weight)
                sign.view(-1)[1::2] = -1
                conv.weight.copy_(sign)  # so the offset sums meet +Inf and -Inf: NaN offsets
                conv.register_forward_hook(lambda m, i, o: nan_offsets.append(bool(o.isnan().any())))
            assert all(bool(p.isfinite().all()) for p in net.parameters())
            out = net(torch.randn(2, 3, 3, 128, 96))
        print("finished", tuple(out.shape), any(nan_offsets), bool(out.isnan().any()))
        """
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "finished (2, 17, 32, 24) True True" in proc.stdout  # NaN offsets met; NaN reported, not hidden


def test_onnxruntime_deformconv_range_checks_itself() -> None:
    """Why exported graphs carry no guard: ONNX Runtime's DeformConv survives NaN, +-Inf and huge
    offsets (those taps read zero), in a subprocess in case it ever stops doing so."""
    proc = _run(
        """
        import numpy as np
        from onnx import TensorProto as TP, helper as oh
        import onnxruntime as ort
        ins = ["x", "w", "off", "", "m"]
        node = oh.make_node("DeformConv", ins, ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
        shapes = {"x": [1, 4, 8, 8], "w": [4, 4, 3, 3], "off": [1, 18, 8, 8], "m": [1, 9, 8, 8]}
        inputs = [oh.make_tensor_value_info(n, TP.FLOAT, s) for n, s in shapes.items()]
        graph = oh.make_graph([node], "g", inputs, [oh.make_tensor_value_info("y", TP.FLOAT, None)])
        model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 19)])
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feed = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
        feed["m"] = np.abs(feed["m"])
        feed["off"][:] = 0
        base = sess.run(None, feed)[0]
        for value in (float("nan"), float("inf"), -float("inf"), 3e38, 1e10):
            feed["off"][0, 3, 2, 2] = value  # tap (0, 1) of pixel (2, 2): x far off the map
            out = sess.run(None, feed)[0]
            assert np.isfinite(out).all(), value
            assert np.array_equal(out[..., 3:, :], base[..., 3:, :]), value  # other pixels untouched
        print("survived")
        """
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "survived" in proc.stdout


@pytest.mark.slow
def test_checkpoint_of_a_huge_learning_rate_step_runs(tmp_path: Path) -> None:
    """The case as filed: ``tdmi-train --lr 1e3`` for 1 step saves finite weights; every later forward
    segfaulted (exit 139). Now it runs, and the NaN output stays visible."""
    run = tmp_path / "run"
    train = _run(
        "from tdmi.cli.train import main; main()",
        "--config", "tdmi-tiny", "--steps", "1", "--lr", "1e3", "--val-every", "0", "--clips-pool", "4",
        "-o", str(run),
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    proc = _run(
        """
        import sys, torch
        from tdmi.data.sample import sample_clips
        from tdmi.model import load_checkpoint
        net = load_checkpoint(sys.argv[1]).eval()
        assert all(bool(p.isfinite().all()) for p in net.parameters())
        clips, _ = sample_clips(2, (128, 96), 3, seed=1)
        with torch.no_grad():
            out = net(torch.from_numpy(clips))
        print("finished", tuple(out.shape))
        """,
        str(run / "last.pt"),
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "finished (2, 17, 32, 24)" in proc.stdout


@pytest.mark.slow
def test_exploding_learning_rate_stops_with_the_documented_message(tmp_path: Path) -> None:
    """``tdmi-train --lr 1e12`` used to segfault at step 2; it now takes the non-finite stop."""
    out = tmp_path / "run"
    proc = _run(
        "from tdmi.cli.train import main; main()",
        "--config", "tdmi-tiny", "--data", "synthetic", "--steps", "4", "--lr", "1e12",
        "--val-every", "0", "--clips-pool", "8", "-o", str(out),
    )  # fmt: skip
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("error: ")
    assert "not finite at step" in err[-1] and "Lower --lr" in err[-1]
    assert "Traceback" not in proc.stderr
    assert not (out / "last.pt").exists()  # nothing broken was saved
