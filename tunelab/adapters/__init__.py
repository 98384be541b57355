"""Adapters: small trainable modules wrapped around frozen nn.Linear layers (see docs/adapters.md)."""

from tunelab.adapters.artifact import export_peft, load_adapter, merge_adapters, save_adapter
from tunelab.adapters.budget import budget_report, check_budget, plan_ranks, trainable_breakdown
from tunelab.adapters.inject import ADAPTERS, adapter_modules, inject_adapters, num_heads_of
from tunelab.adapters.introspect import adapter_stats, plot_scale_heatmap, write_adapter_stats
from tunelab.adapters.spec import AdapterConfig, LayerRule

__all__ = [
    "ADAPTERS", "AdapterConfig", "LayerRule", "adapter_modules", "adapter_stats", "budget_report",
    "check_budget", "export_peft", "inject_adapters", "load_adapter", "merge_adapters", "num_heads_of",
    "plan_ranks", "plot_scale_heatmap", "save_adapter", "trainable_breakdown", "write_adapter_stats",
]
