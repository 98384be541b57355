"""Static PNG plots (matplotlib, Agg backend: no display needed). Report plots come back as PNG bytes
so the HTML page embeds them and stays one file."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from tunelab.rundir import atomic_write_with  # noqa: E402

Series = dict[str, list[tuple[float, float]]]  # run label -> [(x, y), ...]
MAX_LEGEND = 12


def save_figure(fig, path: Path) -> None:
    atomic_write_with(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def confusion_figure(matrix: list[list[int]], label_names: list[str], title: str = ""):
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
    return fig


def plot_confusion_matrix(matrix: list[list[int]], label_names: list[str], path: Path, title: str = "") -> None:
    save_figure(confusion_figure(matrix, label_names, title), path)


def draw_series(ax, series: Series, highlight: str | None = None) -> None:
    for label, points in series.items():
        if points:
            xs, ys = zip(*points, strict=True)
            bold = label == highlight
            ax.plot(xs, ys, label=label, linewidth=2.4 if bold else 1.2, marker="o" if len(xs) < 12 else None,
                    markersize=3, zorder=3 if bold else 2)
    ax.grid(alpha=0.3)


def plot_curves(series: Series, path: Path, ylabel: str, title: str = "") -> None:
    """One line per run: [(step, value), ...]."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    draw_series(ax, series)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if 1 < len(series) <= MAX_LEGEND:
        ax.legend(fontsize=8)
    save_figure(fig, path)


def curve_panels_png(panels: dict[str, Series], highlight: str | None = None) -> bytes:
    """Several small plots (training loss, each eval metric) side by side, one line per run."""
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.3 * nrows), squeeze=False)
    for ax, (title, series) in zip(axes.flat, panels.items(), strict=False):
        draw_series(ax, series, highlight)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    labels = {label for series in panels.values() for label, points in series.items() if points}
    if 1 < len(labels) <= MAX_LEGEND:
        handles, names = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(names) / 4)))
    fig.tight_layout()
    return figure_png(fig)


def sweep_png(trials: list[tuple[int, float, bool]], params: dict[str, list[tuple[Any, float]]], metric: str,
              lower_is_better: bool) -> bytes:
    """Left: the metric per trial in order with the best-so-far line (pruned trials hollow). Then one
    scatter of the metric against each varying hyper-parameter (log axis for wide numeric ranges)."""
    ncols = min(4, 1 + len(params))
    nrows = math.ceil((1 + len(params)) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.1 * nrows), squeeze=False)
    ax = axes.flat[0]
    ordered = sorted(trials)
    numbers = [n for n, _, _ in ordered]
    values = [v for _, v, _ in ordered]
    best, running = [], None
    for value in values:
        running = value if running is None else (min if lower_is_better else max)(running, value)
        best.append(running)
    ax.scatter(numbers, values, c=["none" if p else "C0" for *_, p in ordered], edgecolors="C0", zorder=3)
    ax.step(numbers, best, where="post", color="C1", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    for ax, (name, points) in zip(list(axes.flat)[1:], params.items(), strict=False):
        xs = [x if isinstance(x, int | float) and not isinstance(x, bool) else str(x) for x, _ in points]
        ax.scatter(xs, [y for _, y in points], zorder=3)
        numeric = [x for x in xs if not isinstance(x, str)]
        if len(numeric) == len(xs) and min(numeric) > 0 and max(numeric) / min(numeric) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(name, fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.tick_params(axis="x", labelsize=7, rotation=30)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[1 + len(params):]:
        ax.axis("off")
    fig.tight_layout()
    return figure_png(fig)


def pareto_png(panels: dict[str, tuple[dict[str, tuple[float, float]], set[str]]], metric: str,
               lower_is_better: bool) -> bytes:
    """One scatter per cost axis: each run's final metric against its training cost, the Pareto-optimal
    runs filled and joined by the front's staircase, the others hollow."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.4), squeeze=False)
    for ax, (xlabel, (points, front)) in zip(axes.flat, panels.items(), strict=True):
        for label, (cost, value) in points.items():
            on_front = label in front
            ax.scatter([cost], [value], s=36, zorder=3, edgecolors="C0", facecolors="C0" if on_front else "none")
            if len(points) <= MAX_LEGEND:
                ax.annotate(label, (cost, value), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ordered = sorted((points[label] for label in front), key=lambda p: p[0])
        if len(ordered) > 1:
            ax.step([c for c, _ in ordered], [v for _, v in ordered], where="post", color="C1", zorder=2,
                    label="Pareto front")
            ax.legend(fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} ({'lower' if lower_is_better else 'higher'} is better)", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)
