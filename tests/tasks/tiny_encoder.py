"""A tiny random BERT (2 layers, width 32, no dropout) with a word-level tokenizer over review words:
classification and QA runs in seconds, deterministic for comparisons between runs."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig

from tests.eval.tiny_lm import word_tokenizer

WORDS = "great wonderful movie awful boring film number".split() + [str(i) for i in range(40)]


def review_vocab(*specials: str) -> dict[str, int]:
    return {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *specials, *WORDS])}


def save_tiny_bert(folder: Path, head, vocab: dict[str, int]) -> Path:
    """`head` is a transformers Bert* class (sequence classification, question answering)."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        pad_token_id=0)
    head(config).save_pretrained(folder)
    word_tokenizer(vocab).save_pretrained(folder)
    return folder
