"""TDMI checkpoints that carry their own config, and loading of canonical HRNet weights.

Every failure becomes a ``CheckpointError`` with a message a user can act on, never a stack trace
from inside ``torch.load`` or ``load_state_dict``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from tdmi.errors import CheckpointError, ConfigError
from tdmi.spec.config import TDMIConfig
from tdmi.utils import atomic_path

if TYPE_CHECKING:
    from tdmi.model.tdmi import TDMI

FORMAT = "tdmi-checkpoint"
FORMAT_VERSION = 1
_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "net")


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None
) -> Path:
    """Write weights + config (+ optional extra fields such as epoch) atomically."""
    from tdmi import __version__

    config: TDMIConfig = model.config  # type: ignore[assignment]  # nn.Module types attributes as Tensor
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "toolkit_version": __version__,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if extra:
        payload["extra"] = dict(extra)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _read(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} not found")
    if p.is_dir():
        raise CheckpointError(f"checkpoint path {p} is a folder, not a file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {p} is empty (0 bytes): the download or save was interrupted")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if (
            zipfile.is_zipfile(p)
            or "zip" in msg.lower()
            or isinstance(e, EOFError)
            or "central directory" in msg
        ):
            raise CheckpointError(
                f"checkpoint {p} is truncated or corrupt ({msg}); download or save it again"
            ) from None
        raise CheckpointError(f"{p} is not a PyTorch checkpoint ({msg})") from None
    except (pickle.UnpicklingError, ValueError, UnicodeDecodeError, IndexError, KeyError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{p} is not a PyTorch checkpoint ({first[:160]})") from None


def read_payload(path: str | os.PathLike[str]) -> Any:
    """The raw checkpoint object (weights-only load), every failure a ``CheckpointError``."""
    return _read(path)


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """Find the state dict in the usual layouts: bare, {'state_dict'|'model': ...}, 'module.' prefix."""
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return extract_state_dict(obj[key], source)
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            sd = dict(obj)
            if all(k.startswith("module.") for k in sd):
                sd = {k[len("module.") :]: v for k, v in sd.items()}
            return sd
    raise CheckpointError(
        f"{source} holds no state dict (expected tensors at the top level or under 'state_dict' / 'model')"
    )


def _summarise(model: nn.Module, sd: Mapping[str, Tensor], what: str, limit: int = 5) -> str | None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return None

    def fmt(name: str, items: list[str]) -> str:
        more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
        return f"{len(items)} {name}: {', '.join(items[:limit])}{more}"

    parts = [
        fmt(n, i)
        for n, i in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if i
    ]
    return f"{what} does not fit the architecture: " + "; ".join(parts)


def check_finite_weights(sd: Mapping[str, Tensor], what: str, limit: int = 3) -> None:
    """NaN/Inf weights make every output NaN (or crash DCN): say so at load, not as a "mismatch" later."""
    bad = [
        k
        for k, v in sd.items()
        if isinstance(v, Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        more = f" (+{len(bad) - limit} more)" if len(bad) > limit else ""
        raise CheckpointError(
            f"{what} has NaN/Inf weights in {len(bad)} tensor(s): {', '.join(bad[:limit])}{more}; "
            "the training run diverged or the file is damaged: use an earlier checkpoint"
        )


def load_state_dict_checked(model: nn.Module, sd: Mapping[str, Tensor], what: str) -> None:
    problem = _summarise(model, sd, what)
    if problem:
        raise CheckpointError(problem)
    check_finite_weights(sd, what)
    model.load_state_dict(sd, strict=True)


def load_hrnet_weights(model: nn.Module, source: str | os.PathLike[str] | Mapping[str, Tensor]) -> None:
    """Load a canonical HRNet pose state dict (file or mapping) into ``model.backbone`` strictly."""
    what = "HRNet weights" if isinstance(source, Mapping) else f"HRNet weights {source}"
    obj = source if isinstance(source, Mapping) else _read(source)
    sd = extract_state_dict(obj, what)
    if sd and all(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone.") :]: v for k, v in sd.items()}
    backbone = getattr(model, "backbone", model)  # a TDMI, or an HRNet given directly
    load_state_dict_checked(backbone, sd, what)


def read_checkpoint_config(path: str | os.PathLike[str]) -> TDMIConfig | None:
    obj = _read(path)
    if isinstance(obj, Mapping) and "config" in obj:
        try:
            return TDMIConfig.from_dict(dict(obj["config"]))
        except ConfigError as e:
            raise CheckpointError(f"checkpoint {path} carries an invalid config: {e}") from None
    return None


def load_checkpoint(
    path: str | os.PathLike[str], config: TDMIConfig | None = None, device: str | torch.device = "cpu"
) -> TDMI:
    """Rebuild a TDMI model from a checkpoint (its embedded config unless ``config`` is given).

    A given ``config`` that contradicts the embedded one is an error: silently loading weights
    into a different architecture is how wrong benchmark numbers happen.
    """
    from tdmi.model.tdmi import TDMI

    obj = _read(path)
    embedded: TDMIConfig | None = None
    if isinstance(obj, Mapping) and "config" in obj:
        try:
            embedded = TDMIConfig.from_dict(dict(obj["config"]))
        except ConfigError as e:
            raise CheckpointError(f"checkpoint {path} carries an invalid config: {e}") from None
    if config is not None and embedded is not None:
        a, b = config.to_dict(), embedded.to_dict()
        a.pop("name"), b.pop("name")
        if a != b:
            diff = sorted(k for k in a if a[k] != b.get(k))
            raise CheckpointError(
                f"config {config.name!r} contradicts the config stored in {path} "
                f"(differs in: {', '.join(diff)}); drop --config to use the checkpoint's own"
            )
    cfg = config or embedded
    if cfg is None:
        raise CheckpointError(
            f"{path} has no embedded TDMI config (a bare state dict?): "
            "pass the config/preset it was trained with"
        )
    model = TDMI(cfg)
    sd = extract_state_dict(obj, f"checkpoint {path}")
    load_state_dict_checked(model, sd, f"checkpoint {path} (config {cfg.name!r})")
    return model.to(device).eval()
