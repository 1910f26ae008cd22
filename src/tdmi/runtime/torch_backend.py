"""The PyTorch reference model as a predictor (CPU or CUDA)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tdmi.errors import BackendUnavailableError
from tdmi.runtime.base import Predictor


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"device {device!r} requested but PyTorch sees no CUDA GPU: use device='cpu'"
        )
    return str(device)


class TorchPredictor(Predictor):
    backend = "torch"

    def __init__(self, model: Any, device: str | None = None, source: str = "") -> None:
        import torch

        dev = resolve_device(device)
        self.model = model.eval().to(torch.device(dev))
        super().__init__(model.config, precision="fp32", device=dev, source=source)

    def _forward(self, x: Any) -> Any:
        import torch

        if not str(self.device).startswith("cuda"):
            with torch.inference_mode():
                return self.model(x)
        # The reference is strict FP32: TF32 convolutions would loosen every comparison against it.
        flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            with torch.inference_mode():
                return self.model(x)
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags

    def _run_numpy(self, x: np.ndarray) -> np.ndarray:
        import torch

        y = self._forward(torch.from_numpy(x).to(self.device))
        return y.float().cpu().numpy()

    def _run_torch(self, x: Any) -> Any:
        return self._forward(x.to(self.device)).to(x.device)

    def close(self) -> None:
        super().close()
        self.model = None


def load_torch(source: Any, device: str | None = None) -> TorchPredictor:
    """A checkpoint path, a preset name or a ``TDMIConfig`` (randomly initialised reference weights)."""
    from pathlib import Path

    from tdmi.model import TDMI, TDMIConfig, load_checkpoint, resolve_config

    if isinstance(source, TDMIConfig):
        return TorchPredictor(TDMI(source), device, source=source.name)
    if isinstance(source, (str, Path)) and Path(source).suffix in (".pt", ".pth"):
        model = load_checkpoint(source, device="cpu")
        return TorchPredictor(model, device, source=str(source))
    cfg = resolve_config(str(source))
    return TorchPredictor(TDMI(cfg), device, source=cfg.name)
