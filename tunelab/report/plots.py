"""Static PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tunelab.rundir import atomic_write_with  # noqa: E402


def save_figure(fig, path: Path) -> None:
    atomic_write_with(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def plot_confusion_matrix(matrix: list[list[int]], label_names: list[str], path: Path, title: str = "") -> None:
    size = max(3.5, 0.9 * len(label_names) + 1.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    ax.set_title(title or "confusion matrix")
    save_figure(fig, path)


def plot_curves(series: dict[str, list[tuple[int, float]]], path: Path, ylabel: str, title: str = "") -> None:
    """One line per run: [(step, value), ...]."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, points in series.items():
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    save_figure(fig, path)
