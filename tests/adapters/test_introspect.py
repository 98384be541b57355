"""Adapter statistics and the scale / B-norm heatmap."""

from __future__ import annotations

import json

import pytest
import torch

from tunelab.adapters import AdapterConfig, adapter_stats, inject_adapters, plot_scale_heatmap, write_adapter_stats

from .tiny import tiny_bert, train_steps

IDS = torch.randint(0, 100, (3, 6), generator=torch.Generator().manual_seed(5))


def test_stats_per_module_with_per_head_scales(tmp_path) -> None:
    model = tiny_bert()
    inject_adapters(model, AdapterConfig(variant="ddora", rank=4, scale_init=2.0))
    train_steps(model, IDS)
    stats = write_adapter_stats(model, tmp_path / "adapter_stats.json")
    assert json.loads((tmp_path / "adapter_stats.json").read_text()) == stats
    first = stats[0]
    assert (first["name"], first["layer"], first["kind"]) == ("bert.encoder.layer.0.attention.self.query", 0,
                                                              "attention.self.query")
    assert len(first["scale_out"]) == len(first["scale_in"]) == 4  # one per head
    assert first["scale_out"] != [2.0] * 4  # learned
    assert first["B_norm"] > 0 and first["A_norm"] > 0
    assert set(first["m_out"]) == {"mean", "std", "min", "max", "norm"}


@pytest.mark.parametrize("variant", ["lora", "dora_scaled"])
def test_heatmap_png_written(variant: str, tmp_path) -> None:
    model = tiny_bert()
    inject_adapters(model, AdapterConfig(variant=variant, rank=4))
    png = plot_scale_heatmap(adapter_stats(model), tmp_path / "plots" / "scales.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
