"""Adapters: small trainable modules wrapped around frozen nn.Linear layers (see docs/adapters.md).

The names below resolve lazily (PEP 562): `tunelab.adapters.spec` is imported by `tunelab.config`, and
reading a recipe must not pay for importing torch (several seconds on a small CPU).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "export_peft": "artifact", "load_adapter": "artifact", "merge_adapters": "artifact", "save_adapter": "artifact",
    "budget_report": "budget", "check_budget": "budget", "plan_ranks": "budget", "trainable_breakdown": "budget",
    "ADAPTERS": "inject", "adapter_modules": "inject", "inject_adapters": "inject", "num_heads_of": "inject",
    "adapter_stats": "introspect", "plot_scale_heatmap": "introspect", "write_adapter_stats": "introspect",
    "AdapterConfig": "spec", "LayerRule": "spec", "disabled": "switch",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'tunelab.adapters' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tunelab.adapters.{_HOME[name]}"), name)
