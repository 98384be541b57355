"""The adapter heat map: learned per-head scales and ‖B‖ per layer, drawn from adapter_stats.json.

Reads only the JSON statistics (tunelab.adapters.introspect writes them), so a report can draw it
for copied run folders without importing torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tunelab.rundir import atomic_write_with

SCALE_NAMES = ("scale", "scale_out", "scale_in")


def grid(stats: list[dict[str, Any]], kind: str, key: str) -> np.ndarray:
    """layers × heads matrix of `key` for one module kind; shorter rows padded with NaN."""
    rows = [s for s in stats if s["kind"] == kind and key in s and s["layer"] is not None]
    layers = sorted({s["layer"] for s in rows})
    width = max(len(s[key]) for s in rows)
    out = np.full((len(layers), width), np.nan)
    for s in rows:
        out[layers.index(s["layer"]), : len(s[key])] = s[key]
    return out


def plot_scale_heatmap(stats: list[dict[str, Any]], png_path: Path | str) -> Path:
    """One PNG: a layers × heads heatmap of learned scales per module kind (scaled variants), plus a
    layers × module-kind heatmap of ‖B‖ (every variant)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(s["kind"] for s in stats))
    panels = [(kind, key) for kind in kinds for key in SCALE_NAMES
              if any(key in s for s in stats if s["kind"] == kind)]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4 * (len(panels) + 1), 3.5), squeeze=False)
    for ax, (kind, key) in zip(axes[0], panels, strict=False):
        image = ax.imshow(grid(stats, kind, key), aspect="auto", cmap="viridis")
        ax.set(title=f"{kind} {key}", xlabel="head", ylabel="layer")
        fig.colorbar(image, ax=ax)
    layers = sorted({s["layer"] for s in stats if s["layer"] is not None})
    b_norms = np.full((len(layers), len(kinds)), np.nan)
    for s in stats:
        if s["layer"] is not None:
            b_norms[layers.index(s["layer"]), kinds.index(s["kind"])] = s["B_norm"]
    ax = axes[0][-1]
    image = ax.imshow(b_norms, aspect="auto", cmap="magma")
    ax.set(title="‖B‖", ylabel="layer", xticks=range(len(kinds)))
    ax.set_xticklabels(kinds, rotation=45, ha="right", fontsize=7)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    png_path = Path(png_path)
    atomic_write_with(png_path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))  # a kill leaves no torn PNG
    plt.close(fig)
    return png_path
