"""A shared prompt forward pass gives the log-probs and gradients of two separate rows per pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tasks.tiny_chat import chat_llama
from tunelab.adapters.inject import inject_adapters
from tunelab.adapters.spec import AdapterConfig
from tunelab.data.pairs import PairTokens, collate_pairs
from tunelab.train.preference_loss import pair_logps
from tunelab.train.shared_prompt import collate_shared

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def ragged(rng: np.random.Generator, lengths: tuple[int, ...]) -> list[np.ndarray]:
    return [rng.integers(5, 30, size=n) for n in lengths]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_prompt_equals_two_rows_per_pair_in_value_and_gradient(attention):
    model = chat_llama()
    model.config._attn_implementation = attention
    inject_adapters(model, AdapterConfig(variant="dora", rank=4, targets=ALL_LINEAR, init="small"), num_heads=4)
    rng = np.random.default_rng(0)
    # prompts of different lengths (padding inside the shared pass), a one-token reply, long and short replies
    prompts, chosen, rejected = ragged(rng, (5, 9, 3)), ragged(rng, (4, 1, 6)), ragged(rng, (2, 7, 3))
    tokens = PairTokens(np.arange(3), prompts, chosen, rejected)
    grads, values = [], []
    for batch in (collate_pairs(tokens, np.arange(3), pad_id=0), collate_shared(prompts, chosen, rejected, pad_id=0)):
        model.zero_grad()
        logps = pair_logps(model, batch, chunk=4)
        (logps.chosen.sum() - 0.5 * logps.rejected.sum()).backward()
        values.append(torch.cat([logps.chosen, logps.rejected]).detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        assert logps.chosen_tokens.tolist() == [4, 1, 6] and logps.rejected_tokens.tolist() == [2, 7, 3]
    assert torch.allclose(values[0], values[1], rtol=1e-5, atol=1e-5)
    assert grads[0].abs().max() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5 * float(grads[0].abs().max()))


def test_shared_layout_counts_each_prompt_once():
    prompts, chosen, rejected = [np.arange(6)], [np.arange(3)], [np.arange(2)]
    batch = collate_shared(prompts, chosen, rejected, pad_id=0)
    assert int(batch["prompt_mask"].sum() + batch["completion_mask"].sum()) == 6 + 3 + 2
    assert batch["first_target"].tolist() == [0, 0] and batch["completion_targets"][0].tolist() == [1, 2, -100]
