"""Training losses: joint-weighted heatmap MSE and the vCLUB mutual-information upper bound."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class JointsMSELoss(nn.Module):
    """Canonical HRNet heatmap loss: 0.5 * MSE per joint, weighted by target visibility."""

    def forward(self, pred: Tensor, target: Tensor, target_weight: Tensor) -> Tensor:
        b, j = pred.shape[:2]
        w = target_weight.reshape(b, j, 1)
        diff = (pred.reshape(b, j, -1) - target.reshape(b, j, -1)) * w
        return 0.5 * diff.pow(2).mean(dim=2).mean()


class VCLUB(nn.Module):
    """Variational CLUB (Cheng et al., ICML 2020) upper bound on I(x; y).

    q(y|x) is a diagonal Gaussian from small MLPs; the bound is
    E_p(x,y)[log q(y|x)] - E_p(x)p(y)[log q(y|x)], estimated in-batch.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int) -> None:
        super().__init__()
        self.mu = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, y_dim))
        self.logvar = nn.Sequential(
            nn.Linear(x_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, y_dim), nn.Tanh()
        )

    def log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        mu, logvar = self.mu(x), self.logvar(x)
        return (-((mu - y) ** 2) / logvar.exp() - logvar).sum(dim=1).mean()

    def learning_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Fit q(y|x) (on detached features, so only the estimator learns from it)."""
        return -self.log_likelihood(x, y)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        mu, logvar = self.mu(x), self.logvar(x)
        positive = -((mu - y) ** 2) / logvar.exp()
        # all pairs (i, j): log q(y_j | x_i)
        negative = -((y.unsqueeze(0) - mu.unsqueeze(1)) ** 2).mean(dim=1) / logvar.exp()
        return (positive.sum(dim=1) - negative.sum(dim=1)).mean() / 2.0


class TDMILoss(nn.Module):
    """Heatmap loss + weighted MI upper bound between useful and noisy components."""

    def __init__(self, motion_channels: int, mi_hidden: int = 64, mi_weight: float = 1e-3) -> None:
        super().__init__()
        self.heatmap = JointsMSELoss()
        self.mi = VCLUB(motion_channels, motion_channels, mi_hidden)
        self.mi_weight = mi_weight

    def forward(self, out: object, target: Tensor, target_weight: Tensor) -> dict[str, Tensor]:
        heat = self.heatmap(out.heatmaps, target, target_weight)  # type: ignore[attr-defined]  # a TDMITrainOutput
        u, n = out.useful_pooled, out.noisy_pooled  # type: ignore[attr-defined]  # a TDMITrainOutput
        mi = self.mi(u, n)
        estimator = self.mi.learning_loss(u.detach(), n.detach())
        total = heat + self.mi_weight * mi + estimator
        return {"total": total, "heatmap": heat, "mi": mi, "mi_estimator": estimator}


def make_loss(config: object) -> TDMILoss:
    return TDMILoss(config.resolved_motion_channels, config.mi_hidden, config.mi_weight)  # type: ignore[attr-defined]  # a TDMIConfig


def train_step(
    model: nn.Module,
    loss_fn: TDMILoss,
    optimizer: torch.optim.Optimizer,
    frames: Tensor,
    target: Tensor,
    target_weight: Tensor,
) -> dict[str, float]:
    """One optimisation step over model and MI estimator; returns the loss terms as floats."""
    model.train()
    loss_fn.train()
    optimizer.zero_grad(set_to_none=True)
    losses = loss_fn(model(frames), target, target_weight)
    losses["total"].backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}
