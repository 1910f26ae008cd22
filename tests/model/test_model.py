"""The PyTorch reference: shapes, canonical HRNet weight loading, eval graph, training step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tdmi.errors import CheckpointError, ConfigError
from tdmi.model import PRESETS, TDMI, HRNet, TDMIConfig, get_preset, load_hrnet_weights, make_loss, train_step
from tdmi.model.tdmi import TemporalDifference


def _reference_state_dict(path: Path) -> dict[str, torch.Tensor]:
    shapes = json.loads(path.read_text())
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(v, generator=g) if v else torch.tensor(0) for k, v in shapes.items()}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_gives_heatmaps_at_quarter_resolution(preset: str) -> None:
    cfg = get_preset(preset).replace(input_size=(64, 64))
    model = TDMI(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(2, cfg.num_frames, 3, 64, 64))
    assert out.shape == (2, 17, 16, 16)
    assert torch.isfinite(out).all()


def test_tiny_preset_keeps_the_three_to_four_aspect_and_full_topology() -> None:
    cfg = get_preset("tdmi-tiny")
    assert cfg.input_size[1] / cfg.input_size[0] == 0.75
    model = TDMI(cfg).eval()
    feats = model.backbone.forward_features(torch.randn(3, 3, *cfg.input_size))
    h, w = cfg.heatmap_size
    assert [tuple(f.shape) for f in feats] == [(3, c, h, w) for c in cfg.resolved_stage_channels]


@pytest.mark.parametrize(("width", "name"), [(48, "pose_hrnet_w48_384x288"), (32, "pose_hrnet_w32_256x192")])
def test_canonical_hrnet_checkpoint_loads_strictly(reference_dir: Path, width: int, name: str) -> None:
    path = reference_dir / f"{name}_state_dict_shapes.json"
    ref = json.loads(path.read_text())
    net = HRNet(width=width)
    assert list(net.state_dict()) == list(ref)  # same keys, same order
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == ref
    sd = _reference_state_dict(path)
    net.load_state_dict(sd, strict=True)
    # The same weights go into TDMI's backbone, in every layout users have.
    preset = "tdmi-w48-384x288" if width == 48 else "tdmi-w32-256x192"
    model = TDMI.from_preset(preset)
    for layout in (sd, {"state_dict": sd}, {"model": {f"module.{k}": v for k, v in sd.items()}}):
        load_hrnet_weights(model, layout)
        assert torch.equal(model.backbone.final_layer.weight, sd["final_layer.weight"])


def test_hrnet_forward_is_final_layer_over_highest_resolution_branch() -> None:
    net = HRNet(width=32).eval()
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        feats = net.forward_features(x)
        heat = net(x)
    assert [f.shape[1] for f in feats] == [256, 32, 32, 32]
    assert all(f.shape[-2:] == (32, 24) for f in feats)
    torch.testing.assert_close(heat, net.final_layer(feats[3]))


def test_wrong_backbone_weights_name_the_offending_keys(reference_dir: Path) -> None:
    sd = _reference_state_dict(reference_dir / "pose_hrnet_w32_256x192_state_dict_shapes.json")
    model = TDMI.from_preset("tdmi-tiny")
    with pytest.raises(CheckpointError, match=r"shape mismatch: conv1.weight"):
        load_hrnet_weights(model, sd)
    sd = dict(model.backbone.state_dict())
    del sd["final_layer.bias"]
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"1 missing: final_layer.bias; 1 unexpected: extra.weight$"):
        load_hrnet_weights(model, sd)


def test_temporal_difference_matches_definition() -> None:
    b, t, c, h, w = 2, 5, 3, 4, 6
    x = torch.randn(b * t, c, h, w)
    y = TemporalDifference(t)(x)
    assert y.shape == (b, (t - 1) * c, h, w)
    x5 = x.reshape(b, t, c, h, w)
    for k in range(t - 1):
        torch.testing.assert_close(y[:, k * c : (k + 1) * c], x5[:, k + 1] - x5[:, k])


def test_eval_forward_runs_no_training_only_module() -> None:
    model = TDMI.from_preset("tdmi-tiny")
    called: set[str] = set()
    for name, mod in model.named_modules():
        mod.register_forward_hook(lambda m, i, o, name=name: called.add(name))
    x = torch.randn(1, 3, 3, *model.config.input_size)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor)
    assert not any(n.startswith("rdm.noisy") for n in called)
    assert "rdm.useful" in called and "tde.stage4.dcn" in called
    called.clear()
    model.train()
    out = model(x.repeat(2, 1, 1, 1, 1))
    assert "rdm.noisy" in called
    assert out.noisy.shape == out.useful.shape and out.noisy_pooled.shape == (
        2,
        model.config.resolved_motion_channels,
    )


def test_model_rejects_wrong_number_of_frames() -> None:
    model = TDMI.from_preset("tdmi-tiny").eval()
    with pytest.raises(ValueError, match=r"expected frames \[B, 3, 3, H, W\]"):
        model(torch.randn(1, 5, 3, 128, 96))


def test_train_step_lowers_the_loss_on_a_tiny_batch() -> None:
    torch.manual_seed(0)
    model = TDMI.from_preset("tdmi-tiny")
    loss_fn = make_loss(model.config)
    opt = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=1e-3)
    h, w = model.config.heatmap_size
    frames = torch.randn(2, 3, 3, *model.config.input_size)
    target = torch.zeros(2, 17, h, w)
    target[:, :, h // 2, w // 2] = 1.0
    weight = torch.ones(2, 17, 1)
    first = train_step(model, loss_fn, opt, frames, target, weight)
    for _ in range(6):
        last = train_step(model, loss_fn, opt, frames, target, weight)
    assert set(first) == {"total", "heatmap", "mi", "mi_estimator"}
    assert last["heatmap"] < first["heatmap"]
    assert last["total"] < first["total"]


def test_vclub_bound_is_larger_for_dependent_components() -> None:
    torch.manual_seed(0)
    from tdmi.model import VCLUB

    club = VCLUB(4, 4, 32)
    opt = torch.optim.Adam(club.parameters(), lr=1e-2)
    x = torch.randn(256, 4)
    y_dep = x + 0.1 * torch.randn(256, 4)
    for _ in range(300):
        opt.zero_grad()
        club.learning_loss(x, y_dep).backward()
        opt.step()
    with torch.no_grad():
        dependent = club(x, y_dep)
        independent = club(x, torch.randn(256, 4))
    assert dependent > 1.0 > independent


def test_config_round_trips_through_json_and_rejects_nonsense() -> None:
    for cfg in PRESETS.values():
        assert TDMIConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="unknown preset 'nope'; choose one of: tdmi-w48-384x288"):
        get_preset("nope")
    with pytest.raises(ConfigError, match="unknown model config field"):
        TDMIConfig.from_dict({"widht": 3})
    with pytest.raises(ConfigError, match="num_frames must be >= 2"):
        get_preset("tdmi-tiny").replace(num_frames=1)
    with pytest.raises(ConfigError, match="multiples of 32"):
        get_preset("tdmi-tiny").replace(input_size=(100, 96))
    with pytest.raises(ConfigError, match="contradict the backbone"):
        get_preset("tdmi-tiny").replace(stage_channels=(256, 48, 48, 48))


def test_every_spec_choice_is_a_config_field() -> None:
    cfg = get_preset("tdmi-w48-384x288")
    fields = cfg.to_dict()
    for name in (
        "num_frames",
        "stage_channels",
        "tde_blocks",
        "motion_channels",
        "gate_reduction",
        "head_blocks",
        "num_joints",
        "input_size",
        "sigma",
        "dcn_kernel",
        "bbox_padding",
    ):
        assert name in fields
    assert fields["backbone"]["width"] == 48
    assert cfg.tde_blocks == (3, 3, 2, 2) and cfg.resolved_motion_channels == 48
    # A changed choice changes the network.
    small = TDMI(get_preset("tdmi-tiny").replace(motion_channels=12, tde_blocks=(2, 1, 1, 1)))
    assert small.tde.stage1.dcn.weight.shape[0] == 12
    assert len(small.tde.stage1.blocks) == 2
    assert isinstance(small.tde.stage1.blocks[0].downsample, nn.Sequential)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_joints", "seventeen", 'num_joints must be an integer, got "seventeen"'),
        ("input_size", [128], "input_size must be a list of 2 integers, got [128]"),
        ("sigma", None, "sigma must be a number, got null"),
        ("num_frames", True, "num_frames must be an integer, got true"),
        ("backbone", {"width": "8"}, 'backbone.width must be an integer, got "8"'),
    ],
)
def test_config_json_with_a_wrongly_typed_field_names_file_and_field(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    import json

    from tdmi.errors import ConfigError
    from tdmi.spec.config import resolve_config

    data = get_preset("tdmi-tiny").to_dict()
    data[field] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        resolve_config(str(path))
    assert str(info.value) == f"{path}: model config field {message}"
