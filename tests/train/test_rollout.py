"""Group sampling with a shared prompt cache: greedy rollouts equal Hugging Face `generate` on each prompt
alone (the cache sharing, right padding and row dropping change nothing), sampling follows its seed."""

from __future__ import annotations

import numpy as np
import torch

from tests.eval.tiny_lm import VOCAB, random_llama
from tunelab.train.rollout import sample_completions, sample_next

PROMPTS = [np.array([1, 9, 14, 22, 30, 8]), np.array([1, 40]), np.array([1, 17, 5, 33])]


def reference_greedy(model, prompt: np.ndarray, max_new: int, stop: int) -> list[int]:
    out = model.generate(torch.as_tensor(prompt)[None], max_new_tokens=max_new, do_sample=False,
                         eos_token_id=stop, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_greedy_group_rollouts_equal_generate_per_prompt():
    model = random_llama(len(VOCAB), seed=3)
    rollouts = sample_completions(model, PROMPTS, repeats=2, max_new_tokens=12, temperature=0.0, top_p=1.0,
                                  stop_ids=[2], pad_id=0)
    assert len(rollouts.completions) == 6
    for i, prompt in enumerate(PROMPTS):
        expected = reference_greedy(model, prompt, 12, stop=2)
        expected = expected[:expected.index(2) + 1] if 2 in expected else expected
        assert rollouts.completions[2 * i].tolist() == expected
        assert rollouts.completions[2 * i + 1].tolist() == expected


def test_rows_that_stop_early_leave_the_others_unchanged():
    """Make one token a stop id: rows that emit it end there, the others decode exactly as before."""
    model = random_llama(len(VOCAB), seed=3)
    free = sample_completions(model, PROMPTS, 1, 10, 0.0, 1.0, stop_ids=[2], pad_id=0)
    stop = int(free.completions[0][2])  # prompt 0's third greedy token
    cut = sample_completions(model, PROMPTS, 1, 10, 0.0, 1.0, stop_ids=[2, stop], pad_id=0)
    for before, after in zip(free.completions, cut.completions, strict=True):
        hits = np.flatnonzero(before == stop)
        end = hits[0] + 1 if hits.size else len(before)
        assert after.tolist() == before[:end].tolist()
    assert cut.stopped[0] and len(cut.completions[0]) == 3


def test_sampling_follows_its_generator_seed():
    model = random_llama(len(VOCAB), seed=3, head_scale=2.0)

    def draw(seed: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(seed)
        out = sample_completions(model, PROMPTS, 4, 8, 1.0, 1.0, stop_ids=[2], pad_id=0, generator=gen)
        return [c.tolist() for c in out.completions]

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)
    group = draw(5)[:4]
    assert len({tuple(c) for c in group}) > 1  # one prompt's G samples differ from each other


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, 1.0, 0.7, gen)) for _ in range(300)}
    assert draws == {0, 1}  # 0.5 < 0.7 needs the second token; the 0.8 reached excludes the rest
    assert {int(sample_next(logits, 1.0, 0.4, gen)) for _ in range(50)} == {0}
