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
from tunelab.report.heatmap import SCALE_NAMES, plot_scale_heatmap  # noqa: F401 (re-exported)
from tunelab.rundir import atomic_write_json

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
