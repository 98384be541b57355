"""Budgets counted exactly on real architectures (meta device: shapes, no weights) against hand formulas."""

from __future__ import annotations

import pytest

from tunelab.adapters import (
    AdapterConfig,
    adapter_modules,
    budget_report,
    check_budget,
    inject_adapters,
    plan_ranks,
    trainable_breakdown,
)
from tunelab.errors import TunelabError

from .tiny import minilm_on_meta, smollm2_on_meta

# MiniLM-L6: BERT, hidden 384, 6 layers, FFN 1536, vocab 30522, 512 positions; 4 labels.
H, FFN, V, P, LAYERS, LABELS = 384, 1536, 30522, 512, 6, 4
BERT_LAYER = 4 * (H * H + H) + (H * FFN + FFN) + (FFN * H + H) + 2 * 2 * H
MINILM_TOTAL = V * H + P * H + 2 * H + 2 * H + LAYERS * BERT_LAYER + (H * H + H) + (H * LABELS + LABELS)
HEAD = H * LABELS + LABELS


def test_minilm_lora_counts_exact() -> None:
    model = minilm_on_meta()
    inject_adapters(model, AdapterConfig(variant="lora", rank=8, trainable_extra=["classifier"]))
    counts = trainable_breakdown(model)
    lora = LAYERS * 2 * 8 * (H + H)  # query and value, r·(in + out) each
    assert counts["adapters"] == lora == 73_728
    assert counts["head"] == HEAD == 1_540 and counts["other"] == 0
    assert counts["total"] == MINILM_TOTAL + lora
    assert counts["percent"] == pytest.approx(100 * (lora + HEAD) / (MINILM_TOTAL + lora))


@pytest.mark.parametrize(("variant", "per_module"), [
    ("dora", 8 * 2 * H + H),                             # + m (out)
    ("dora_scaled", 8 * 2 * H + H + 12),                 # + m (out) + one scale per head (12 heads)
    ("ddora", 8 * 2 * H + H + 12 + H + 12),              # + m_in, scale_in, m_out, scale_out
])
def test_minilm_variant_counts_exact(variant: str, per_module: int) -> None:
    model = minilm_on_meta()
    inject_adapters(model, AdapterConfig(variant=variant, rank=8))
    assert trainable_breakdown(model)["adapters"] == LAYERS * 2 * per_module


def test_minilm_full_finetune_is_variant_none() -> None:
    model = minilm_on_meta()
    assert inject_adapters(model, AdapterConfig(variant="none")) == []
    counts = trainable_breakdown(model)
    assert counts["trainable"] == counts["total"] == MINILM_TOTAL
    assert counts["head"] == HEAD and counts["other"] == MINILM_TOTAL - HEAD


def test_smollm2_gqa_counts_and_heads() -> None:
    h, kv, heads, n = 576, 192, 9, 30  # 3 kv heads of head_dim 64
    model = smollm2_on_meta()
    assert trainable_breakdown(model)["total"] == 134_515_008
    cfg = AdapterConfig(variant="dora_scaled", rank=8, targets=[r"self_attn\.[qkvo]_proj"])
    inject_adapters(model, cfg)
    per_layer = (8 * (h + h) + h + heads) * 2 + (8 * (h + kv) + kv + kv // 64) * 2  # q, o + k, v
    assert trainable_breakdown(model)["adapters"] == n * per_layer
    adapters = adapter_modules(model)
    assert adapters["model.layers.0.self_attn.k_proj"].scale.numel() == 3
    assert adapters["model.layers.0.self_attn.q_proj"].scale.numel() == 9


def test_check_budget_message_names_the_split() -> None:
    model = minilm_on_meta()
    inject_adapters(model, AdapterConfig(rank=8, trainable_extra=["classifier"]))
    with pytest.raises(TunelabError) as err:
        check_budget(model, AdapterConfig(max_trainable=70_000))
    assert str(err.value) == ("75,268 trainable parameters exceed adapter.max_trainable=70,000 "
                              "(adapters 73,728, head 1,540, other 0)")


def test_plan_fill_uniform_then_greedy() -> None:
    cfg = AdapterConfig(rank=8, trainable_extra=["classifier"], max_trainable=100_000, plan="fill")
    planned = plan_ranks(minilm_on_meta(), cfg, head_params=HEAD)
    # 98,460 left after the head; each rank costs 768 per module: uniform 10 (92,160), +1 on 8 modules.
    assert [rule.rank for rule in planned.layers] == [11] * 8 + [10] * 4
    assert planned.plan == "fixed"
    model = minilm_on_meta()
    inject_adapters(model, cfg)  # plan: fill runs inside injection
    assert trainable_breakdown(model)["trainable"] == 8 * 11 * 768 + 4 * 10 * 768 + HEAD == 99_844


def test_budget_report_text() -> None:
    cfg = AdapterConfig(rank=8, trainable_extra=["classifier"], max_trainable=70_000)
    text = budget_report(minilm_on_meta(), cfg)
    assert "bert.encoder.layer.N.attention.self.query  lora           8      6       36,864" in text
    assert "75,268 of" in text and "EXCEEDS" in text


def test_budget_report_variant_none_reports_flags_as_set() -> None:
    model = minilm_on_meta()
    for name, param in model.named_parameters():  # head-only training, set up by the caller
        param.requires_grad = name.startswith("classifier")
    assert f"trainable          {HEAD:,} of" in budget_report(model, AdapterConfig(variant="none"))
