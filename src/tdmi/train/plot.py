"""``--plot``: loss terms, learning rate and validation score of a run, from its ``log.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tdmi.utils import atomic_path


def plot_curves(log_path: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train: list[dict[str, Any]] = []
    val: list[dict[str, Any]] = []
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        (val if rec.get("kind") == "val" else train).append(rec)
    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["heatmap"] for r in train])
    axes[0].set_yscale("log")
    axes[0].set_title("heatmap MSE")
    # The estimator term is a negative log-likelihood: it (and so the total) may go below zero.
    for k in ("total", "mi_estimator"):
        axes[1].plot(steps, [r[k] for r in train], label=k)
    axes[1].plot(steps, [r["mi"] * 1e3 for r in train], label="vCLUB x 1e3")
    axes[1].set_title("total and MI terms")
    axes[1].legend()
    axes[2].plot(steps, [r["lr"] for r in train])
    axes[2].set_title("learning rate")
    key = "val_map" if any("val_map" in r for r in val) else "pck"
    axes[3].plot([r["step"] for r in val], [r.get(key, float("nan")) for r in val], marker="o")
    axes[3].set_title(f"validation {key}")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return out
