"""The PyTorch reference model as a predictor (CPU or CUDA), whole or split at the backbone.

The one place in ``tdmi.runtime`` that reaches the torch model: only inside functions, after
checking that torch is installed (the base install has no torch: ``tdmi-deploy[export]`` adds it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tdmi.errors import BackendUnavailableError
from tdmi.runtime.base import FramePredictor, Predictor


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


class TorchFramePredictor(FramePredictor):
    backend = "torch"

    def __init__(self, model: Any, device: str = "cpu") -> None:
        from tdmi.model.split import split_model

        super().__init__(model.config)
        self.device = device
        self._backbone, self._head = split_model(model)

    def frame_features(self, crops: np.ndarray) -> list[np.ndarray]:
        import torch

        x = torch.from_numpy(self._check_crops(crops)).to(self.device)
        with torch.inference_mode():
            return [f.float().cpu().numpy() for f in self._backbone(x)]

    def head(self, stacks: list[np.ndarray]) -> np.ndarray:
        import torch

        xs = [torch.from_numpy(s).to(self.device) for s in self._check_stacks(stacks)]
        with torch.inference_mode():
            return self._head(*xs).float().cpu().numpy()


def load_torch(source: Any, device: str | None = None) -> TorchPredictor:
    """A checkpoint path, a preset name or a ``TDMIConfig`` (randomly initialised reference weights)."""
    from pathlib import Path

    from tdmi.extras import require

    require("torch", "the torch backend (a preset, a .pt checkpoint or a model config)")
    from tdmi.model import TDMI, load_checkpoint
    from tdmi.spec.config import TDMIConfig, resolve_config

    if isinstance(source, TDMIConfig):
        return TorchPredictor(TDMI(source), device, source=source.name)
    if isinstance(source, (str, Path)) and Path(source).suffix in (".pt", ".pth"):
        model = load_checkpoint(source, device="cpu")
        return TorchPredictor(model, device, source=str(source))
    cfg = resolve_config(str(source))
    return TorchPredictor(TDMI(cfg), device, source=cfg.name)
