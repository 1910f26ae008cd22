"""Checkpoints: round trip with embedded config, and a clear message for every broken case."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tdmi.errors import CheckpointError
from tdmi.model import TDMI, get_preset, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def tiny() -> TDMI:
    torch.manual_seed(0)
    return TDMI.from_preset("tdmi-tiny").eval()


@pytest.fixture(scope="module")
def saved(tiny: TDMI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tiny, tmp_path_factory.mktemp("ckpt") / "tiny.pt", extra={"epoch": 3})


def test_round_trip_rebuilds_the_model_from_the_file_alone(tiny: TDMI, saved: Path) -> None:
    loaded = load_checkpoint(saved)
    assert loaded.config == tiny.config
    assert not loaded.training
    x = torch.randn(2, 3, 3, *tiny.config.input_size)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), tiny(x))


@pytest.mark.parametrize("layout", ["bare", "state_dict", "model", "module_prefix"])
def test_common_layouts_load_with_a_config(tiny: TDMI, tmp_path: Path, layout: str) -> None:
    sd = tiny.state_dict()
    obj = {
        "bare": sd,
        "state_dict": {"state_dict": sd, "epoch": 1},
        "model": {"model": sd},
        "module_prefix": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    }[layout]
    path = tmp_path / "c.pth"
    torch.save(obj, path)
    loaded = load_checkpoint(path, config=tiny.config)
    torch.testing.assert_close(loaded.head.final_layer.weight, tiny.head.final_layer.weight)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint .*nope.pt not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    p = tmp_path / "notes.pt"
    p.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_checkpoint(p)


def test_empty_and_truncated_files(saved: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load_checkpoint(empty)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(cut)


def test_no_state_dict_inside(tmp_path: Path) -> None:
    p = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "lr": 0.1}, p)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_checkpoint(p, config=get_preset("tdmi-tiny"))


def test_bare_state_dict_without_config_says_what_to_pass(tiny: TDMI, tmp_path: Path) -> None:
    p = tmp_path / "bare.pt"
    torch.save(tiny.state_dict(), p)
    with pytest.raises(CheckpointError, match="no embedded TDMI config"):
        load_checkpoint(p)


def test_wrong_architecture_summarises_keys(tiny: TDMI, tmp_path: Path) -> None:
    p = tmp_path / "bare.pt"
    torch.save(tiny.state_dict(), p)
    other = get_preset("tdmi-tiny").replace(motion_channels=16)
    with pytest.raises(
        CheckpointError, match=r"does not fit the architecture: .*shape mismatch: tde\.stage1"
    ):
        load_checkpoint(p, config=other)


def test_config_that_contradicts_the_stored_one(saved: Path) -> None:
    other = get_preset("tdmi-tiny").replace(head_blocks=2)
    with pytest.raises(CheckpointError, match=r"contradicts the config stored in .*differs in: head_blocks"):
        load_checkpoint(saved, config=other)


def test_save_is_atomic_when_the_folder_is_missing(tiny: TDMI, tmp_path: Path) -> None:
    from tdmi.errors import TdmiError

    with pytest.raises(TdmiError, match="does not exist"):
        save_checkpoint(tiny, tmp_path / "missing" / "x.pt")
    assert not (tmp_path / "missing").exists()


def test_non_finite_weights_are_refused_at_load_and_export(tiny: TDMI, tmp_path: Path) -> None:
    from tdmi.cli.common import run_app
    from tdmi.cli.export import app

    broken = TDMI(tiny.config).eval()
    broken.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        next(broken.backbone.parameters()).view(-1)[0] = float("nan")
    path = save_checkpoint(broken, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"NaN/Inf weights in 1 tensor\(s\): backbone\."):
        load_checkpoint(path)
    out = tmp_path / "out"
    out.mkdir()
    assert run_app(app, ["onnx", "--checkpoint", str(path), "-o", str(out / "m.onnx")]) == 1
    assert list(out.iterdir()) == []  # no model, no temp file
