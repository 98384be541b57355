"""Batched generation: left padding is exact, stops at EOS, respects max_new_tokens and the settings."""

from __future__ import annotations

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.eval.generation import (
    GenerationSettings,
    cut_at_stop,
    cut_at_stop_string,
    format_prompt,
    generate,
    generate_with_stats,
    stop_token_ids,
)

from .tiny_lm import tiny_llama, tiny_tokenizer

PROMPTS = ["what is ai ?", "tell me something interesting about the big red dog and the small cat .", "hi",
           "why is the sun big ?"]


def new_token_ids(model, tokenizer, prompt: str, n: int) -> list[int]:
    """Greedy continuation of one prompt, no padding, no stop tokens: the reference for the tests below."""
    from tunelab.eval.chat_format import encode_text

    ids = torch.tensor([encode_text(tokenizer, format_prompt(tokenizer, prompt))])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


def test_batched_greedy_equals_one_prompt_at_a_time() -> None:
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    settings = GenerationSettings(max_new_tokens=8, batch_size=4)
    batched = generate(model, tokenizer, PROMPTS, settings)
    alone = [generate(model, tokenizer, [p], settings)[0] for p in PROMPTS]
    assert batched == alone
    assert all(batched) and len(set(batched)) > 1  # the prompts do steer the random model


def test_stops_at_generation_config_eos_and_drops_it() -> None:
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    tokens = new_token_ids(model, tokenizer, PROMPTS[0], 6)
    stop = tokens[2]  # make the third greedy token a stop token, as a chat model's end-of-turn id would be
    assert stop not in tokens[:2]
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, stop]
    assert stop_token_ids(model, tokenizer) == [tokenizer.eos_token_id, stop]
    out = generate_with_stats(model, tokenizer, PROMPTS[:2], GenerationSettings(max_new_tokens=6, batch_size=2))
    assert out.texts[0] == tokenizer.decode(tokens[:2]).strip()
    assert out.new_tokens[0] == 3  # two words plus the stop token
    assert out.new_tokens[1] <= 6 and out.tokens_per_s > 0


def test_max_new_tokens_is_a_hard_limit() -> None:
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    out = generate_with_stats(model, tokenizer, PROMPTS, GenerationSettings(max_new_tokens=3))
    assert all(n <= 3 for n in out.new_tokens)
    assert all(len(text.split()) <= 3 for text in out.texts)


def test_sampling_is_seeded_and_leaves_global_rng_alone() -> None:
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    settings = GenerationSettings(max_new_tokens=6, temperature=5.0, top_p=0.95, seed=3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = generate(model, tokenizer, PROMPTS, settings)
    assert torch.equal(torch.get_rng_state(), state)
    assert generate(model, tokenizer, PROMPTS, settings) == first
    assert generate(model, tokenizer, PROMPTS, GenerationSettings(max_new_tokens=6)) != first


def test_cut_at_stop() -> None:
    assert cut_at_stop([5, 6, 2, 0, 0], [2]) == ([5, 6], 3)
    assert cut_at_stop([5, 6, 7], [2]) == ([5, 6, 7], 3)


@pytest.mark.parametrize("field,value", [("max_new_tokens", 0), ("temperature", -1.0), ("top_p", 0.0),
                                         ("batch_size", 0)])
def test_bad_settings_name_the_field(field: str, value: float) -> None:
    with pytest.raises(TunelabError, match=f"generation setting {field}="):
        GenerationSettings(**{field: value})


def test_raw_continuation_keeps_leading_space_and_stops_at_a_stop_string() -> None:
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    raw = GenerationSettings(max_new_tokens=6, chat=False)
    full = generate_with_stats(model, tokenizer, ["the cat is"], raw)
    words = full.texts[0].split()
    assert full.texts[0].startswith(" ") and len(words) == 6  # no template, not stripped
    stop = f" {words[2]}"
    cut = generate_with_stats(model, tokenizer, ["the cat is"], GenerationSettings(max_new_tokens=6, chat=False,
                                                                                   stop=(stop,)))
    assert cut.texts[0] == full.texts[0][:full.texts[0].index(stop)]
    assert cut.new_tokens[0] < 6  # generation itself stopped early, not only the text


def test_cut_at_stop_string_takes_the_earliest() -> None:
    assert cut_at_stop_string("    return x\nprint(1)\ndef g", ("\ndef ", "\nprint(")) == "    return x"
    assert cut_at_stop_string("abc", ("\ndef ",)) == "abc"
