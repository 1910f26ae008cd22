"""DCN v2 as standard ops: torchvision parity, the model switch, ONNX export and the ONNX lowering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torchvision.ops import deform_conv2d

from tdmi.errors import ConfigError, ExportError
from tdmi.export.dcn_lowering import lower_deform_conv
from tdmi.export.onnx_export import example_clips, export_onnx
from tdmi.export.ort_ops import run_onnx
from tdmi.model import TDMI, get_preset
from tdmi.model.dcn import deform_conv2d_decomposed

# (N, Cin, H, W, Cout, kernel, stride, padding, dilation, groups, offset_groups)
CASES = [
    (2, 8, 7, 5, 6, 3, (1, 1), (1, 1), (1, 1), 1, 1),  # odd sizes, the model's configuration
    (1, 8, 9, 11, 4, 3, (2, 2), (1, 1), (2, 2), 2, 2),  # stride, dilation, groups, offset groups
    (2, 6, 10, 7, 6, 3, (2, 1), (0, 2), (1, 2), 3, 3),  # per-axis stride / padding / dilation
    (3, 4, 1, 1, 4, 3, (1, 1), (1, 1), (1, 1), 1, 1),  # 1x1 map: every tap but the centre is outside
    (1, 4, 6, 6, 2, 1, (1, 1), (0, 0), (1, 1), 1, 1),  # 1x1 kernel
]


def _inputs(case: tuple, dtype: torch.dtype, offset_scale: float = 3.0) -> dict:
    n, cin, h, w, cout, k, s, p, d, g, og = case
    gen = torch.Generator().manual_seed(0)
    ho = (h + 2 * p[0] - d[0] * (k - 1) - 1) // s[0] + 1
    wo = (w + 2 * p[1] - d[1] * (k - 1) - 1) // s[1] + 1
    return {
        "input": torch.randn(n, cin, h, w, generator=gen, dtype=dtype),
        # Offsets of a few pixels: many taps land between pixels and many outside the map.
        "offset": torch.randn(n, 2 * og * k * k, ho, wo, generator=gen, dtype=dtype) * offset_scale,
        "weight": torch.randn(cout, cin // g, k, k, generator=gen, dtype=dtype),
        "bias": torch.randn(cout, generator=gen, dtype=dtype),
        "mask": torch.rand(n, og * k * k, ho, wo, generator=gen, dtype=dtype),
        "stride": s,
        "padding": p,
        "dilation": d,
    }


@pytest.mark.parametrize("case", CASES)
def test_matches_torchvision_exactly_in_fp64(case: tuple) -> None:
    kw = _inputs(case, torch.float64)
    ref = deform_conv2d(**kw)
    out = deform_conv2d_decomposed(**kw)
    assert out.shape == ref.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("case", CASES[:3])
def test_fp32_and_without_mask(case: tuple) -> None:
    kw = _inputs(case, torch.float32)
    torch.testing.assert_close(deform_conv2d_decomposed(**kw), deform_conv2d(**kw), atol=5e-4, rtol=0)
    kw["mask"] = None  # DCN v1
    torch.testing.assert_close(deform_conv2d_decomposed(**kw), deform_conv2d(**kw), atol=5e-4, rtol=0)


def test_sampling_points_outside_the_map_read_zeros() -> None:
    kw = _inputs(CASES[0], torch.float64)
    kw["offset"] = torch.full_like(kw["offset"], 100.0)  # every tap far outside: only the bias remains
    out = deform_conv2d_decomposed(**kw)
    expected = kw["bias"][None, :, None, None].expand_as(out)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(out, deform_conv2d(**kw), atol=1e-12, rtol=0)


def test_fp16_stays_fp16_and_close_to_fp32() -> None:
    kw = _inputs(CASES[0], torch.float32, offset_scale=1.5)
    ref = deform_conv2d(**kw)
    half = {k: v.half() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    out = deform_conv2d_decomposed(**half)
    assert out.dtype == torch.float16
    scale = ref.abs().max().item()
    assert (out.float() - ref).abs().max().item() <= 1e-2 * scale


def test_bad_shapes_say_what_is_expected() -> None:
    kw = _inputs(CASES[0], torch.float32)
    kw["offset"] = kw["offset"][:, :5]
    with pytest.raises(ValueError, match="offset_groups"):
        deform_conv2d_decomposed(**kw)


# -- the model -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dcn_net() -> TDMI:
    """tdmi-tiny with non-zero offset convolutions, so the DCNs really deform (the init is zero)."""
    torch.manual_seed(0)
    net = TDMI.from_preset("tdmi-tiny").eval()
    with torch.no_grad():
        for j in range(1, 5):
            conv = getattr(net.tde, f"stage{j}").dcn.offset_mask
            conv.weight.normal_(0, 0.3)
            conv.bias.normal_(0, 1.0)
    return net


def test_config_field_is_validated_and_serialised() -> None:
    cfg = get_preset("tdmi-tiny").replace(deform_conv="decomposed")
    assert type(cfg).from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="deform_conv"):
        get_preset("tdmi-tiny").replace(deform_conv="plugin")


def test_model_switch_keeps_the_numbers(tiny_dcn_net: TDMI) -> None:
    x = torch.from_numpy(example_clips(tiny_dcn_net.config, 2))
    with torch.no_grad():
        native = tiny_dcn_net(x)
        tiny_dcn_net.set_deform_conv("decomposed")
        try:
            assert tiny_dcn_net.config.deform_conv == "decomposed"
            decomposed = tiny_dcn_net(x)
        finally:
            tiny_dcn_net.set_deform_conv("native")
    torch.testing.assert_close(decomposed, native, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def exports(tiny_dcn_net: TDMI, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dcn")
    paths = {"native": d / "native.onnx", "decomposed": d / "decomposed.onnx"}
    for form, path in paths.items():
        export_onnx(
            None, path, model=tiny_dcn_net, batch="dynamic", verify=False, progress=False, deform_conv=form
        )
    return paths


def test_export_decomposed_has_no_deformconv_and_names_nodes_by_stage(
    exports: dict[str, Path], tiny_dcn_net: TDMI
) -> None:
    assert tiny_dcn_net.config.deform_conv == "native"  # the caller's model is given back unchanged
    model = onnx.load(str(exports["decomposed"]))
    assert not [n for n in model.graph.node if n.op_type == "DeformConv"]
    grid = [n.name for n in model.graph.node if n.op_type == "GridSample"]
    assert sorted(n.split("/")[1] for n in grid) == ["stage1", "stage2", "stage3", "stage4"]
    assert all(n.startswith("tde/stage") and "/dcn/" in n for n in grid)
    from tdmi.export.metadata import read_metadata

    assert read_metadata(model)["config"].deform_conv == "decomposed"


def test_decomposed_matches_native_on_onnxruntime(exports: dict[str, Path], tiny_dcn_net: TDMI) -> None:
    clips = example_clips(tiny_dcn_net.config, 3)
    native, decomposed = run_onnx(exports["native"], clips), run_onnx(exports["decomposed"], clips)
    assert np.abs(native).max() > 1e-2
    assert np.abs(decomposed - native).max() <= 1e-4


def test_onnx_lowering_matches_native_on_onnxruntime(exports: dict[str, Path], tiny_dcn_net: TDMI) -> None:
    native = onnx.load(str(exports["native"]))
    lowered, count = lower_deform_conv(native)
    assert count == 4
    ops = [n.op_type for n in lowered.graph.node]
    assert "DeformConv" not in ops and ops.count("GridSample") == 4
    assert all(
        n.name.startswith("tde/stage") and "/dcn/" in n.name
        for n in lowered.graph.node
        if n.op_type == "GridSample"
    )
    assert lower_deform_conv(lowered)[1] == 0  # nothing left to lower
    from tdmi.export.metadata import read_metadata

    assert read_metadata(lowered)["config"].deform_conv == "decomposed"
    assert read_metadata(native)["config"].deform_conv == "native"  # the input is not modified
    path = exports["native"].with_name("lowered.onnx")
    onnx.save(lowered, str(path))
    clips = example_clips(tiny_dcn_net.config, 3)
    assert np.abs(run_onnx(path, clips) - run_onnx(exports["native"], clips)).max() <= 1e-4


def test_export_rejects_unknown_form(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="native' or 'decomposed"):
        export_onnx("tdmi-tiny", tmp_path / "x.onnx", deform_conv="plugin", progress=False)


def test_cli_export_decomposed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tdmi.cli.common import run_app
    from tdmi.cli.export import app

    out = tmp_path / "dcn.onnx"
    args = ["onnx", "--config", "tdmi-tiny", "-o", str(out), "--no-verify", "--deform-conv", "decomposed"]
    assert run_app(app, args) == 0
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("GridSample") == 4 and "DeformConv" not in ops
    capsys.readouterr()
    bad = tmp_path / "bad.onnx"
    assert run_app(app, ["onnx", "--config", "tdmi-tiny", "-o", str(bad), "--deform-conv", "plugin"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Invalid value for '--deform-conv'" in err  # a typed choice: click names the option
    assert not bad.exists()
