"""Where adapters go: regex targets, exclude, first-match LayerRules, head counts per module."""

from __future__ import annotations

import pytest
import torch

from tunelab.adapters import AdapterConfig, LayerRule, adapter_modules, inject_adapters, num_heads_of
from tunelab.errors import TunelabError

from .tiny import smollm2_on_meta, tiny_bert

Q, V = "attention.self.query", "attention.self.value"


def test_per_layer_rules_first_match_wins() -> None:
    model = tiny_bert()
    cfg = AdapterConfig(variant="lora", rank=4, alpha=8, targets=["query", "value", "intermediate"],
                        exclude=[r"layer\.1\.intermediate"], layers=[
                            LayerRule(pattern=r"layer\.0\.attention\.self\.query", rank=2, alpha=1.0, dropout=0.1),
                            LayerRule(pattern=r"layer\.0\.", variant="dora"),  # shadowed for layer-0 query
                            LayerRule(pattern=r"layer\.1\.attention\.self\.value", exclude=True),
                            LayerRule(pattern=r"layer\.1\.attention\.self\.query", variant="none"),
                        ])
    names = inject_adapters(model, cfg)
    layer = "bert.encoder.layer"
    assert names == [f"{layer}.0.{Q}", f"{layer}.0.{V}", f"{layer}.0.intermediate.dense"]
    adapters = adapter_modules(model)
    query = adapters[f"{layer}.0.{Q}"]
    assert (query.variant, query.r, query.scaling, query.settings.dropout) == ("lora", 2, 0.5, 0.1)
    assert adapters[f"{layer}.0.{V}"].variant == "dora"
    assert adapters[f"{layer}.0.intermediate.dense"].variant == "dora"
    assert adapters[f"{layer}.0.{V}"].r == 4


def test_wrapped_module_keeps_base_weight_visible_and_frozen() -> None:
    model = tiny_bert()
    query_weight = model.bert.encoder.layer[0].attention.self.query.weight
    inject_adapters(model, AdapterConfig())
    wrapped = model.bert.encoder.layer[0].attention.self.query
    assert wrapped.weight is query_weight and not query_weight.requires_grad
    assert not any(p.requires_grad for n, p in model.named_parameters() if "classifier" in n)


def test_num_heads_and_gqa_heads_per_module() -> None:
    assert num_heads_of(tiny_bert()) == 4
    assert num_heads_of(torch.nn.Linear(2, 2)) is None
    model = smollm2_on_meta()
    inject_adapters(model, AdapterConfig(variant="ddora", targets=[r"layers\.0\.self_attn\.[kq]_proj$"]))
    k_proj = adapter_modules(model)["model.layers.0.self_attn.k_proj"]
    assert (k_proj.scale_in.numel(), k_proj.scale_out.numel()) == (9, 3)  # in 576 = 9 heads, out 192 = 3


def test_granularity_options() -> None:
    for granularity, size in (("head", 4), ("feature", 32), ("scalar", 1)):
        model = tiny_bert()
        inject_adapters(model, AdapterConfig(variant="dora_scaled", scale_granularity=granularity))
        assert adapter_modules(model)[f"bert.encoder.layer.0.{Q}"].scale.numel() == size


def test_plain_module_without_config_needs_no_heads_for_feature_scales() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    assert inject_adapters(model, AdapterConfig(variant="ddora", targets=["^0$"], rank=2,
                                                scale_granularity="feature")) == ["0"]
    assert model(torch.randn(3, 6)).shape == (3, 2)
    plain = torch.nn.Sequential(torch.nn.Linear(6, 5))
    with pytest.raises(TunelabError, match="adapter on 0: adapter.scale_granularity=head needs the model's"):
        inject_adapters(plain, AdapterConfig(variant="dora_scaled", targets=["^0$"]))
