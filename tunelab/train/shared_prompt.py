"""Preference pairs with one prompt forward pass: chosen and rejected continue the prompt's KV cache.

Why: a pair is (x, y_c) and (x, y_r). Under causal attention the hidden states of the prompt tokens x
do not depend on what follows them, so running [x, y_c] and [x, y_r] as two rows computes x twice. In
HH-RLHF dialogues the prompt is most of the tokens, so sharing it removes close to half of the FLOPs:

    cost(two rows) ∝ 2·|x| + |y_c| + |y_r|      cost(shared) ∝ |x| + |y_c| + |y_r|

How:
1. the P prompts run once, right-padded (every row starts with a real token, so no query row is fully
   masked), with `use_cache=True`; the hidden state at each prompt's last real token predicts the first
   completion token of both replies;
2. the cache is repeated row-wise (`batch_repeat_interleave(2)`: rows 2i, 2i+1 are pair i's chosen and
   rejected), and the 2P completions run on top of it with the 2-D mask [prompt mask, completion mask]
   (prompt padding masked out) and position ids continuing from each prompt's true length, so rotary
   positions match the unshared rows exactly;
3. gradients flow through the cache into the prompt pass, so the update equals the unshared one.

This needs an attention implementation that takes a padding mask with a KV cache (eager, sdpa); with
gradient checkpointing transformers turns the cache off, so the task falls back to two rows per pair.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tunelab.train.lm_loss import IGNORE


def _chunk_logps(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias)  # (n, V)
    return -F.cross_entropy(logits.float(), targets, reduction="none")  # (n,) log π(target)


def target_logps(model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """log π(target) per position (n,) for hidden states (n, H), projecting `chunk` of them at a time to the
    vocabulary (under activation checkpointing when training: no (n, V) logits tensor is kept for backward)."""
    head = model.get_output_embeddings()
    parts = []
    for start in range(0, targets.shape[0], chunk):
        h_chunk, y_chunk = hidden[start:start + chunk], targets[start:start + chunk]
        if torch.is_grad_enabled():
            parts.append(checkpoint(_chunk_logps, h_chunk, y_chunk, head.weight, head.bias, use_reentrant=False))
        else:
            parts.append(_chunk_logps(h_chunk, y_chunk, head.weight, head.bias))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def summed_target_logps(model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor,
                        num_rows: int, chunk: int) -> torch.Tensor:
    """Σ log π(target) per row (num_rows,); `rows[i]` is the row of position i."""
    token_logps = target_logps(model, hidden, targets, chunk)
    return hidden.new_zeros(num_rows, dtype=torch.float32).index_add(0, rows, token_logps)


def collate_shared(prompts: list[np.ndarray], chosen: list[np.ndarray], rejected: list[np.ndarray],
                   pad_id: int) -> dict[str, torch.Tensor]:
    """The shared-prompt batch of P pairs.

    prompt_ids / prompt_mask (P, Lp), right-padded; prompt_len (P,);
    completion_ids / completion_mask (2P, Lc), rows 2i = chosen_i, 2i+1 = rejected_i, right-padded;
    first_target (2P,) = each completion's first token (predicted from the prompt's last hidden state);
    completion_targets (2P, Lc): position j predicts completion token j+1, IGNORE past the end."""
    p = len(prompts)
    completions = [seq for pair in zip(chosen, rejected, strict=True) for seq in pair]
    lp = max(len(x) for x in prompts)
    lc = max(len(c) for c in completions)
    prompt_ids = np.full((p, lp), pad_id, dtype=np.int64)
    prompt_mask = np.zeros((p, lp), dtype=np.int64)
    for r, x in enumerate(prompts):
        prompt_ids[r, :len(x)] = x
        prompt_mask[r, :len(x)] = 1
    completion_ids = np.full((2 * p, lc), pad_id, dtype=np.int64)
    completion_mask = np.zeros((2 * p, lc), dtype=np.int64)
    targets = np.full((2 * p, lc), IGNORE, dtype=np.int64)
    for r, c in enumerate(completions):
        completion_ids[r, :len(c)] = c
        completion_mask[r, :len(c)] = 1
        targets[r, :len(c) - 1] = c[1:]
    return {"prompt_ids": torch.from_numpy(prompt_ids), "prompt_mask": torch.from_numpy(prompt_mask),
            "prompt_len": torch.tensor([len(x) for x in prompts], dtype=torch.int64),
            "completion_ids": torch.from_numpy(completion_ids), "completion_mask": torch.from_numpy(completion_mask),
            "first_target": torch.tensor([int(c[0]) for c in completions], dtype=torch.int64),
            "completion_targets": torch.from_numpy(targets)}


def shared_prompt_logps(model: nn.Module, batch: dict[str, torch.Tensor], chunk: int,
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chosen sums (P,), rejected sums (P,), chosen tokens (P,), rejected tokens (P,)) of the completion
    log-probs, with the prompt computed once per pair (module docstring)."""
    n = batch["prompt_len"].shape[0]
    last, hidden = continue_prompts(model, batch, repeats=2)
    keep = batch["completion_targets"] != IGNORE
    rows = torch.cat([torch.arange(2 * n, device=keep.device), keep.nonzero()[:, 0]])
    h = torch.cat([last.repeat_interleave(2, dim=0), hidden[keep]])
    y = torch.cat([batch["first_target"], batch["completion_targets"][keep]])
    sums = summed_target_logps(model, h, y, rows, 2 * n, chunk)
    counts = batch["completion_mask"].sum(1)
    return sums[0::2], sums[1::2], counts[0::2], counts[1::2]


def continue_prompts(model: nn.Module, batch: dict[str, torch.Tensor],
                     repeats: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run P right-padded prompts once, then R = P·repeats completions on their repeated KV cache (rows
    i·repeats … i·repeats+repeats−1 continue prompt i). Returns the hidden state at each prompt's last real
    token (P, H), which predicts every continuation's first token, and the completions' states (R, Lc, H)."""
    decoder = model.base_model
    prompt_len = batch["prompt_len"]
    n = prompt_len.shape[0]
    out = decoder(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"], use_cache=True)
    cache = out.past_key_values
    cache.batch_repeat_interleave(repeats)
    last = out.last_hidden_state[torch.arange(n, device=prompt_len.device), prompt_len - 1]  # (P, H)
    width = batch["completion_ids"].shape[1]
    positions = prompt_len.repeat_interleave(repeats)[:, None] + torch.arange(width, device=prompt_len.device)
    mask = torch.cat([batch["prompt_mask"].repeat_interleave(repeats, dim=0), batch["completion_mask"]], dim=1)
    hidden = decoder(input_ids=batch["completion_ids"], attention_mask=mask, position_ids=positions,
                     past_key_values=cache, use_cache=True).last_hidden_state  # (R, Lc, H)
    return last, hidden
