"""Sampling G completions per prompt for GRPO, with each prompt's KV cache computed once.

Why not `model.generate(num_return_sequences=G)`: it repeats every prompt G times *before* the prefill,
so the prompt (most of the tokens in BBH or GSM8K questions) is computed G times. Here:
1. the P prompts run once, right-padded (no row starts with padding, so no query is fully masked and no
   NaN can reach the cache); the hidden state at each prompt's last real token gives the first
   next-token distribution;
2. the cache is repeated row-wise (rows i·G … i·G+G−1 belong to prompt i), and decoding continues one
   token at a time with position ids from each prompt's true length — the layout the training forward
   (`tunelab.train.shared_prompt.continue_prompts`) uses, so rollout and training see the same positions;
3. a row that emits a stop id is finished and dropped from the batch *and* the cache
   (`batch_select_indices`), so short answers stop costing compute while long ones finish.
Sampling: softmax(logits / T) restricted to the smallest set of tokens whose mass reaches top_p, drawn
with the torch.Generator the caller seeds (temperature 0: greedy).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Rollouts:
    completions: list[np.ndarray]  # R = P·G token arrays, the stop token included when one was emitted
    stopped: np.ndarray  # (R,) bool: ended with a stop token (else cut at max_new_tokens)
    seconds: float

    @property
    def tokens(self) -> int:
        return int(sum(len(c) for c in self.completions))


def sample_next(logits: torch.Tensor, temperature: float, top_p: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """One token per row from (A, V) logits: greedy at temperature 0, else nucleus sampling."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the tokens ranked above each one
        sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)  # the top token always stays
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def right_padded(prompts: list[np.ndarray], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, :len(prompt)] = torch.as_tensor(prompt, dtype=torch.long)
        mask[row, :len(prompt)] = 1
    return {"prompt_ids": ids.to(device), "prompt_mask": mask.to(device),
            "prompt_len": torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)}


@torch.no_grad()
def sample_completions(model: nn.Module, prompts: list[np.ndarray], repeats: int, max_new_tokens: int,
                       temperature: float, top_p: float, stop_ids: list[int], pad_id: int,
                       generator: torch.Generator | None = None) -> Rollouts:
    """`repeats` completions of every prompt (module docstring), in prompt-major order."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    decoder, head = model.base_model, model.get_output_embeddings()
    batch = right_padded(prompts, pad_id, device)
    n, prompt_len = len(prompts), batch["prompt_len"]
    out = decoder(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"], use_cache=True)
    cache = out.past_key_values
    cache.batch_repeat_interleave(repeats)
    last = out.last_hidden_state[torch.arange(n, device=device), prompt_len - 1]
    logits = head(last).float().repeat_interleave(repeats, dim=0)  # (R, V)
    rows = n * repeats
    mask = batch["prompt_mask"].repeat_interleave(repeats, dim=0)
    positions = prompt_len.repeat_interleave(repeats)
    stop = torch.tensor(stop_ids, dtype=torch.long, device=device)
    tokens = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long)
    lengths = torch.zeros(rows, dtype=torch.long)
    stopped = torch.zeros(rows, dtype=torch.bool)
    active = torch.arange(rows)
    for t in range(max_new_tokens):
        token = sample_next(logits, temperature, top_p, generator)  # (A,)
        tokens[active, t] = token.cpu()
        lengths[active] = t + 1
        done = torch.isin(token, stop)
        if bool(done.any()):
            stopped[active[done.cpu()]] = True
            keep = (~done).nonzero()[:, 0]
            if keep.numel() == 0:
                break
            active, token, mask, positions = active[keep.cpu()], token[keep], mask[keep], positions[keep]
            cache.batch_select_indices(keep)
        if t == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        hidden = decoder(input_ids=token[:, None], attention_mask=mask, position_ids=positions[:, None],
                         past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
        positions = positions + 1
        logits = head(hidden).float()
    completions = [tokens[r, :int(lengths[r])].numpy().copy() for r in range(rows)]
    return Rollouts(completions, stopped.numpy(), time.perf_counter() - started)
