"""Causal-LM loss computed in chunks, and only where labels exist.

Why: a 49k-token vocabulary makes the logits tensor (B, T, V) the biggest thing in SFT memory (TRL
materialises it in fp32 several times: 9.9 GB peak on SmolLM2-135M, batch 8 x 256). We take the final
hidden states (B, T, H), keep the N positions that have a target (assistant tokens), and project them
to the vocabulary `chunk` rows at a time under activation checkpointing, so at most one (chunk, V)
block of logits exists at once, in the forward and again in the backward pass.

Targets are pre-shifted by the task: targets[t] is the token at t+1, or -100 where there is nothing to
learn (prompt tokens, padding, the last token of each packed example).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE = -100


def _chunk_nll(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias)  # (n, V)
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def final_hidden(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The decoder's last hidden states (B, T, H), without the LM head."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    return model.base_model(**inputs, use_cache=False).last_hidden_state


def summed_nll(model: nn.Module, batch: dict[str, torch.Tensor], chunk: int) -> tuple[torch.Tensor, int, int]:
    """(sum of token NLLs, number of target tokens, number predicted correctly)."""
    hidden = final_hidden(model, batch)
    keep = batch["targets"] != IGNORE
    h, y = hidden[keep], batch["targets"][keep]  # (N, H), (N,)
    head = model.get_output_embeddings()
    total = hidden.new_zeros((), dtype=torch.float32)
    correct = 0
    for start in range(0, y.shape[0], chunk):
        h_chunk, y_chunk = h[start:start + chunk], y[start:start + chunk]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_nll, h_chunk, y_chunk, head.weight, head.bias, use_reentrant=False)
        else:
            logits = F.linear(h_chunk, head.weight, head.bias)
            total = total + F.cross_entropy(logits.float(), y_chunk, reduction="sum")
            correct += int((logits.argmax(-1) == y_chunk).sum())
    return total, int(y.shape[0]), correct


def mean_nll(model: nn.Module, batch: dict[str, torch.Tensor], chunk: int) -> torch.Tensor:
    total, count, _ = summed_nll(model, batch, chunk)
    return total / max(count, 1)
