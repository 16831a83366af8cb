"""PNG figures of training (loss curves) and replay (predicted vs recorded actions), via Agg.

matplotlib is imported inside the functions so that training and replay do not pay for it
until a figure is drawn.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_loss_curves", "plot_replay", "read_metrics"]


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Write the figure next to `path`, then rename it into place (readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    return path


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (a torn last line is ignored)."""
    records = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def plot_loss_curves(metrics_path: str | Path, png_path: str | Path) -> Path:
    """Training loss (per logging window) and validation loss against the step, log scale."""
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        if train:
            ax.plot(*zip(*train, strict=True), label="train loss", lw=1.2)
        if val:
            ax.plot(*zip(*val, strict=True), "o-", label="validation loss (EMA)", lw=1.2)
        if train or val:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("training")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper right")
        fig.tight_layout()
        return save_figure(fig, Path(png_path))
    finally:
        plt.close(fig)


def plot_replay(
    png_path: str | Path,
    joint_names: Sequence[str],
    recorded: np.ndarray,
    predicted: np.ndarray,
    episode_starts: Sequence[int],
    errors: dict[str, dict[str, float]],
    title: str,
) -> Path:
    """One panel per joint: recorded actions and the executed predicted chunks, (T, D) each.

    Episodes are drawn back to back; dotted vertical lines mark where each one starts.
    """
    plt = pyplot()
    n = len(joint_names)
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.9 * n + 0.8), sharex=True, squeeze=False)
    try:
        steps = np.arange(len(recorded))
        for j, name in enumerate(joint_names):
            ax = axes[j, 0]
            ax.plot(steps, recorded[:, j], color="black", lw=1.4, label="recorded")
            ax.plot(steps, predicted[:, j], color="tab:orange", lw=1.2, label="predicted")
            for start in episode_starts[1:]:
                ax.axvline(start - 0.5, color="grey", ls=":", lw=0.8)
            err = errors.get(name, {})
            ax.set_ylabel(name)
            ax.set_title(
                f"{name}: MAE {err.get('mae', float('nan')):.4g}, "
                f"RMSE {err.get('rmse', float('nan')):.4g}",
                fontsize=9,
            )
            ax.grid(True, alpha=0.3)
        axes[0, 0].legend(loc="upper right", fontsize=8)
        axes[-1, 0].set_xlabel("control step (episodes back to back)")
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        return save_figure(fig, Path(png_path))
    finally:
        plt.close(fig)
