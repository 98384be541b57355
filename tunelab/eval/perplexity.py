"""Perplexity of a reference answer given its chat-formatted prompt (the seeds' per-prompt table).

For prompt x (formatted by `format_prompt`, i.e. ending where the assistant's answer starts) and
reference answer y = y_1..y_L (tokenized on its own, no special tokens, no end-of-turn marker):

    NLL(y | x) = - sum_j log p(y_j | x, y_<j)          PPL = exp(NLL / L)

Prompt tokens are context only: they never enter the sum. The corpus perplexity pools all tokens,
exp(sum_i NLL_i / sum_i L_i), so long answers weigh more than in the mean of per-prompt PPLs.

Memory: the vocabulary is the big axis (49k for SmolLM2, 150k for Qwen2.5). Instead of the model's
full (B, T, V) logits, the decoder body gives hidden states (B, T, H); only the positions that predict
reference tokens are kept, and the output head runs on them `chunk_tokens` at a time, cast to fp32
for the log-softmax. Peak logits memory is chunk_tokens x V x 4 bytes whatever the batch size.
The split body/head equals the model's own forward for ordinary causal LMs; models that post-process
logits (Gemma-2's soft-capping, Cohere's logit scale) are detected once by comparing one row against
the full forward, and then scored with the full forward one row at a time (slower, still exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tunelab.errors import TunelabError
from tunelab.eval.chat_format import encode_text
from tunelab.eval.generation import format_prompt
from tunelab.train.batching import pad_batch

CHUNK_TOKENS = 512  # 512 x 49,152 x 4 B ≈ 100 MB of fp32 logits for SmolLM2


@dataclass(frozen=True)
class PerplexityResult:
    """Per prompt: NLL summed over reference tokens and their count (0 where there is no reference)."""

    nll_sums: list[float]
    token_counts: list[int]

    @property
    def per_prompt(self) -> list[float | None]:
        return [math.exp(nll / n) if n else None for nll, n in zip(self.nll_sums, self.token_counts, strict=True)]

    @property
    def mean_ppl(self) -> float | None:
        values = [p for p in self.per_prompt if p is not None]
        return sum(values) / len(values) if values else None

    @property
    def corpus_ppl(self) -> float | None:
        total = sum(self.token_counts)
        return math.exp(sum(self.nll_sums) / total) if total else None


def encode_pairs(tokenizer: Any, prompts: list[str], references: list[str | None],
                 system: str | None = None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, reference ids) per row; prompt and answer are tokenized separately so the answer's
    first token is the one the model would generate right after the prompt."""
    pairs = []
    for prompt, reference in zip(prompts, references, strict=True):
        prompt_ids = encode_text(tokenizer, format_prompt(tokenizer, prompt, system))
        if not prompt_ids:
            raise TunelabError(f"prompt {prompt!r} tokenized to zero tokens; perplexity needs a context")
        reference_ids = list(tokenizer(reference, add_special_tokens=False)["input_ids"]) if reference else []
        pairs.append((prompt_ids, reference_ids))
    return pairs


@torch.no_grad()
def reference_perplexity(model: Any, tokenizer: Any, prompts: list[str], references: list[str | None], *,
                         batch_size: int = 8, system: str | None = None,
                         chunk_tokens: int = CHUNK_TOKENS) -> PerplexityResult:
    """Perplexity of each reference given its prompt (rows without a reference get count 0)."""
    pairs = encode_pairs(tokenizer, prompts, references, system)
    nll, counts = [0.0] * len(pairs), [len(ref) for _, ref in pairs]
    scored = sorted((i for i in range(len(pairs)) if counts[i]), key=lambda i: sum(map(len, pairs[i])))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    split = None
    for start in range(0, len(scored), batch_size):
        rows = scored[start:start + batch_size]
        if split is None:
            first_prompt, first_ref = pairs[rows[0]]
            split = split_head_matches(model, first_prompt + first_ref)
        score = _batch_nll_split if split else _batch_nll_full
        for i, value in zip(rows, score(model, [pairs[i] for i in rows], pad_id, chunk_tokens), strict=True):
            nll[i] = value
    return PerplexityResult(nll, counts)


def split_head_matches(model: Any, ids: list[int]) -> bool:
    """Whether output_head(decoder_body(x)) reproduces the model's logits on one row."""
    body, head = model.get_decoder(), model.get_output_embeddings()
    if body is None or head is None or body is model:
        return False
    x = torch.tensor([ids], device=_device(model))
    full = model(input_ids=x, use_cache=False).logits[0, -4:].float()
    hidden = body(input_ids=x, use_cache=False).last_hidden_state[0, -4:]
    return torch.allclose(head(hidden).float(), full, rtol=1e-3, atol=1e-3)


def _batch_nll_split(model: Any, pairs: list[tuple[list[int], list[int]]], pad_id: int,
                     chunk_tokens: int) -> list[float]:
    """Summed reference NLL per row: body on the padded batch, head on reference positions in chunks."""
    ids, mask = _right_pad([p + r for p, r in pairs], pad_id)
    device = _device(model)
    hidden = model.get_decoder()(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 use_cache=False).last_hidden_state  # (B, T, H)
    rows, positions, targets = [], [], []
    for row, (prompt, reference) in enumerate(pairs):
        start = len(prompt) - 1  # the hidden state at position t predicts token t + 1
        rows += [row] * len(reference)
        positions += range(start, start + len(reference))
        targets += reference
    rows_t, targets_t = torch.tensor(rows, device=device), torch.tensor(targets, device=device)
    selected = hidden[rows_t, torch.tensor(positions, device=device)]  # (N, H), N = reference tokens
    sums = torch.zeros(len(pairs), dtype=torch.float64, device=device)
    head = model.get_output_embeddings()
    for begin in range(0, len(targets), chunk_tokens):
        part = slice(begin, begin + chunk_tokens)
        logits = head(selected[part]).float()  # (n, V) fp32 — the only vocab-sized tensor alive
        token_nll = F.cross_entropy(logits, targets_t[part], reduction="none")
        sums.index_add_(0, rows_t[part], token_nll.double())
    return sums.tolist()


def _batch_nll_full(model: Any, pairs: list[tuple[list[int], list[int]]], pad_id: int,
                    chunk_tokens: int) -> list[float]:
    """Fallback: the model's own forward, one unpadded row at a time, log-softmax in fp32 chunks."""
    device, sums = _device(model), []
    for prompt, reference in pairs:
        x = torch.tensor([prompt + reference], device=device)
        logits = model(input_ids=x, use_cache=False).logits[0, len(prompt) - 1:-1]  # (L, V) predicting y
        targets = torch.tensor(reference, device=device)
        total = 0.0
        for begin in range(0, len(reference), chunk_tokens):
            part = slice(begin, begin + chunk_tokens)
            total += F.cross_entropy(logits[part].float(), targets[part], reduction="sum").item()
        sums.append(total)
    return sums


def _right_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right padding keeps each row's positions 0..len-1, so no position ids are needed."""
    return pad_batch(sequences, pad_id)


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device
