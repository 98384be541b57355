"""Chat formatting: the tokenizer's template when it has one, the fallback otherwise."""

from __future__ import annotations

import pytest

from tunelab.eval.chat_format import chat_text, encode_text
from tunelab.eval.generation import format_prompt

from .tiny_lm import tiny_tokenizer

SFT_TURN = [{"role": "user", "content": "what is ai ?"}, {"role": "assistant", "content": "a model ."}]


def test_fallback_layout_and_bos() -> None:
    tokenizer = tiny_tokenizer()
    text = format_prompt(tokenizer, "what is ai ?", system="hi")
    assert text == "### System:\nhi\n\n### User:\nwhat is ai ?\n\n### Assistant:\n"
    assert encode_text(tokenizer, text)[0] == tokenizer.bos_token_id  # plain text gets the tokenizer's BOS


def test_fallback_prompt_is_a_prefix_of_the_full_turn_which_ends_in_eos() -> None:
    """The SFT task masks the prompt by length: this prefix property is what makes that correct."""
    tokenizer = tiny_tokenizer()
    prompt = chat_text(tokenizer, SFT_TURN[:1], add_generation_prompt=True)
    full = chat_text(tokenizer, SFT_TURN, add_generation_prompt=False)
    assert full.startswith(prompt) and full == prompt + "a model .</s>\n\n"  # the turn ends in the EOS token


def test_own_template_is_used_and_specials_are_not_added_twice() -> None:
    tokenizer = tiny_tokenizer(with_template=True)
    text = format_prompt(tokenizer, "what is ai ?")
    assert text == "user : what is ai ? </s> Assistant :"
    assert encode_text(tokenizer, text)[0] != tokenizer.bos_token_id  # the template decides about BOS


def test_template_without_system_role_gets_system_folded_into_the_user_turn() -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                               "{{ raise_exception('System role not supported') }}{% endif %}"
                               "{{ m['role'] }} : {{ m['content'] }} {% endfor %}")
    assert format_prompt(tokenizer, "what is ai ?", system="hi") == "user : hi\n\nwhat is ai ? "
    with pytest.raises(Exception, match="System role"):
        chat_text(tokenizer, [{"role": "system", "content": "hi"}], add_generation_prompt=True)


def test_eos_appended_by_the_tokenizer_is_dropped_but_eos_in_the_text_is_kept() -> None:
    from tokenizers import processors

    tokenizer = tiny_tokenizer()
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    prompt = format_prompt(tokenizer, "hi")
    assert tokenizer(prompt)["input_ids"][-1] == 2 and encode_text(tokenizer, prompt)[-1] != 2
    full = chat_text(tokenizer, [*SFT_TURN[:1], {"role": "assistant", "content": "hi"}], add_generation_prompt=False)
    ids = encode_text(tokenizer, full)  # the answer's own EOS stays, once (the trailing "\n\n" has no tokens here)
    assert ids[-1] == 2 and ids[-2] != 2
