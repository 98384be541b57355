"""Look inside trained adapters: norms of A and B, magnitude statistics, learned per-head scales.

Seed 000's observations (B stays near zero under plain DoRA; per-head scales spread out and neither die
nor explode) are read off exactly these numbers, so they are written with every run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunelab.adapters.inject import adapter_modules
from tunelab.rundir import atomic_write_json

SCALE_NAMES = ("scale", "scale_out", "scale_in")
MAGNITUDE_NAMES = ("m", "m_out", "m_in")


def layer_index(name: str) -> int | None:
    """The first `.N.` in a module name (the transformer block), None outside the stack."""
    found = re.search(r"\.(\d+)\.", f".{name}.")
    return int(found.group(1)) if found else None


def module_kind(name: str) -> str:
    """The name after the layer index (`attention.self.query`), so layers line up in one column."""
    parts = re.split(r"\.\d+\.", name, maxsplit=1)
    return parts[-1]


def tensor_summary(t: torch.Tensor) -> dict[str, float]:
    t = t.detach().float()
    return {"mean": t.mean().item(), "std": t.std().item() if t.numel() > 1 else 0.0,
            "min": t.min().item(), "max": t.max().item(), "norm": t.norm().item()}


def adapter_stats(model: nn.Module) -> list[dict[str, Any]]:
    """One record per adapted module: name, layer, kind, variant, rank, ‖A‖, ‖B‖, magnitude stats and
    the scale values (one per head under "head" granularity)."""
    records = []
    for name, mod in adapter_modules(model).items():
        record: dict[str, Any] = {"name": name, "layer": layer_index(name), "kind": module_kind(name),
                                  "variant": mod.variant, "rank": mod.r,
                                  "A_norm": mod.A.detach().float().norm().item(),
                                  "B_norm": mod.B.detach().float().norm().item()}
        for attr in MAGNITUDE_NAMES:
            if isinstance(getattr(mod, attr, None), torch.Tensor):
                record[attr] = tensor_summary(getattr(mod, attr))
        for attr in SCALE_NAMES:
            if isinstance(getattr(mod, attr, None), torch.Tensor):
                record[attr] = [round(v, 6) for v in getattr(mod, attr).detach().float().tolist()]
        records.append(record)
    return records


def write_adapter_stats(model: nn.Module, path: Path | str) -> list[dict[str, Any]]:
    stats = adapter_stats(model)
    atomic_write_json(Path(path), stats)
    return stats


def grid(stats: list[dict[str, Any]], kind: str, key: str) -> torch.Tensor:
    """layers × heads matrix of `key` for one module kind; shorter rows padded with NaN."""
    rows = [s for s in stats if s["kind"] == kind and key in s and s["layer"] is not None]
    layers = sorted({s["layer"] for s in rows})
    width = max(len(s[key]) for s in rows)
    out = torch.full((len(layers), width), float("nan"))
    for s in rows:
        out[layers.index(s["layer"]), : len(s[key])] = torch.tensor(s[key])
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
        image = ax.imshow(grid(stats, kind, key).numpy(), aspect="auto", cmap="viridis")
        ax.set(title=f"{kind} {key}", xlabel="head", ylabel="layer")
        fig.colorbar(image, ax=ax)
    layers = sorted({s["layer"] for s in stats if s["layer"] is not None})
    b_norms = torch.full((len(layers), len(kinds)), float("nan"))
    for s in stats:
        if s["layer"] is not None:
            b_norms[layers.index(s["layer"]), kinds.index(s["kind"])] = s["B_norm"]
    ax = axes[0][-1]
    image = ax.imshow(b_norms.numpy(), aspect="auto", cmap="magma")
    ax.set(title="‖B‖", ylabel="layer", xticks=range(len(kinds)))
    ax.set_xticklabels(kinds, rotation=45, ha="right", fontsize=7)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
