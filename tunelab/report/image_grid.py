"""A grid of eval images with their true and predicted class, e.g. an image classifier's mistakes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tunelab.report.plots import plt, save_figure


def plot_image_grid(images: np.ndarray, captions: list[str], path: Path, title: str = "") -> None:
    """images (N, H, W, C) uint8 with C 1 or 3; one caption per image; written atomically as PNG."""
    count = max(1, len(images))
    columns = min(8, count)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.45 * columns, 1.65 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None,
                  interpolation="nearest")
        ax.set_title(caption, fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
