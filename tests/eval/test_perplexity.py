"""Reference perplexity: exp(mean NLL) over reference tokens only, however it is batched or chunked."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tunelab.eval.chat_format import encode_text
from tunelab.eval.generation import format_prompt
from tunelab.eval.perplexity import reference_perplexity, split_head_matches

from .tiny_lm import tiny_llama, tiny_tokenizer

PROMPTS = ["what is ai ?", "tell me about the big red dog .", "hi", "why ?"]
REFERENCES = ["ai is a model of language .", "the dog is big and red and the cat is small .", None, "rain"]


def independent_nll(model, tokenizer, prompt: str, reference: str) -> tuple[float, int]:
    """One unpadded forward over prompt + reference; sum the NLL of the reference tokens by hand."""
    prompt_ids = encode_text(tokenizer, format_prompt(tokenizer, prompt))
    reference_ids = tokenizer(reference, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + reference_ids])
    with torch.no_grad():
        log_probs = F.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    nll = -sum(log_probs[len(prompt_ids) + j - 1, token].item() for j, token in enumerate(reference_ids))
    return nll, len(reference_ids)


@pytest.mark.parametrize("batch_size,chunk_tokens", [(1, 512), (4, 512), (3, 2)])
def test_equals_exp_mean_nll_of_reference_tokens(batch_size: int, chunk_tokens: int) -> None:
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    assert split_head_matches(model, [1, 5, 6])  # the fast body + chunked-head path is the one under test
    result = reference_perplexity(model, tokenizer, PROMPTS, REFERENCES, batch_size=batch_size,
                                  chunk_tokens=chunk_tokens)
    expected = [independent_nll(model, tokenizer, p, r) if r else (0.0, 0)
                for p, r in zip(PROMPTS, REFERENCES, strict=True)]
    assert result.token_counts == [n for _, n in expected]
    for got, (nll, n) in zip(result.per_prompt, expected, strict=True):
        assert (got is None) if n == 0 else got == pytest.approx(math.exp(nll / n), rel=1e-4)
    total_nll, total = sum(nll for nll, _ in expected), sum(n for _, n in expected)
    assert result.corpus_ppl == pytest.approx(math.exp(total_nll / total), rel=1e-4)
    scored = [p for p in result.per_prompt if p is not None]
    assert result.mean_ppl == pytest.approx(sum(scored) / len(scored))


def test_prompt_tokens_are_excluded() -> None:
    """Same reference, different prompt: the count is the reference length and the value changes."""
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    reference = "the dog is big ."
    a = reference_perplexity(model, tokenizer, ["hi"], [reference])
    b = reference_perplexity(model, tokenizer, ["tell me a story about the river city ."], [reference])
    assert a.token_counts == b.token_counts == [5]
    assert a.per_prompt[0] != pytest.approx(b.per_prompt[0], rel=1e-3)
    # and it is not the perplexity of the whole sequence
    ids = torch.tensor([encode_text(tokenizer, format_prompt(tokenizer, "hi"))
                        + tokenizer(reference, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        whole = math.exp(model(input_ids=ids, labels=ids).loss.item())
    assert a.per_prompt[0] != pytest.approx(whole, rel=1e-3)


def test_models_that_post_process_logits_fall_back_to_the_full_forward() -> None:
    """A soft-capped head (Gemma-2 style) is detected, and the slow path is still exact."""
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    forward = model.forward

    def capped(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = 3.0 * torch.tanh(out.logits / 3.0)
        return out

    model.forward = capped
    ids = encode_text(tokenizer, format_prompt(tokenizer, "hi"))
    assert not split_head_matches(model, ids)
    result = reference_perplexity(model, tokenizer, PROMPTS[:2], REFERENCES[:2], batch_size=2)
    for got, prompt, reference in zip(result.per_prompt, PROMPTS[:2], REFERENCES[:2], strict=True):
        nll, n = independent_nll(model, tokenizer, prompt, reference)
        assert got == pytest.approx(math.exp(nll / n), rel=1e-4)


def test_no_references_gives_none() -> None:
    result = reference_perplexity(tiny_llama(), tiny_tokenizer(), ["hi"], [None])
    assert result.per_prompt == [None] and result.mean_ppl is None and result.corpus_ppl is None
