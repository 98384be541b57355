"""Chat messages → the text a causal LM sees, shared by evaluation and SFT.

A tokenizer that ships a chat template (SmolLM2-Instruct, Llama-3-Instruct, Qwen2.5-Instruct, ...) is
used as is: a chat model scores and answers best in the format it was tuned on. A base model usually has
no template; then `FALLBACK_TEMPLATE` renders a plain Alpaca-like layout:

    ### System:\\n{system}\\n\\n### User:\\n{prompt}\\n\\n### Assistant:\\n{answer}{eos}\\n\\n

Two properties the SFT task relies on: the text for `add_generation_prompt=True` (ending in
"### Assistant:\\n") is an exact prefix of the text with the assistant answer appended, so the answer's
tokens can be masked by length; and each assistant turn ends with the tokenizer's eos token, so a model
fine-tuned on this layout learns to stop.

Templated text already contains its special tokens (BOS where the template wants one), so it is
tokenized with `add_special_tokens=False`, exactly as `apply_chat_template(tokenize=True)` does;
fallback text is plain text and gets the tokenizer's usual specials (a base Llama wants its BOS).
"""

from __future__ import annotations

from typing import Any

FALLBACK_TEMPLATE = (  # newlines sit inside {{ }}: HF renders with trim_blocks, which eats one after a tag
    "{% for message in messages %}"
    "{{ '### ' + (message['role'] | capitalize) + ':\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token or '' }}{% endif %}"
    "{{ '\\n\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\\n' }}{% endif %}"
)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_text(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """Render `messages` ({role, content} dicts) with the tokenizer's template, else FALLBACK_TEMPLATE.

    Some templates (Gemma's) reject a system role; then the system text is folded into the first user
    turn, which is what those models' own docs recommend, rather than failing the whole evaluation.
    """
    from jinja2 import TemplateError

    template = None if has_chat_template(tokenizer) else FALLBACK_TEMPLATE
    try:
        return _render(tokenizer, messages, add_generation_prompt, template)
    except TemplateError:
        if not messages or messages[0]["role"] != "system" or len(messages) < 2:
            raise
        system, first, rest = messages[0], messages[1], messages[2:]
        merged = {**first, "content": f"{system['content']}\n\n{first['content']}"}
        return _render(tokenizer, [merged, *rest], add_generation_prompt, template)


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool,
            template: str | None) -> str:
    text = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
    return str(text)


def prompt_messages(prompt: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt}]


def add_special_tokens(tokenizer: Any) -> bool:
    """Whether text from `chat_text` should be tokenized with the tokenizer's BOS/EOS added (see module doc)."""
    return not has_chat_template(tokenizer)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of chat-formatted text, specials handled as the module docstring explains.

    A tokenizer that appends EOS to plain text (a few do) would tell the model the turn is over before
    it answers, so a trailing EOS added by the tokenizer is dropped.
    """
    special = add_special_tokens(tokenizer)
    ids = list(tokenizer(text, add_special_tokens=special)["input_ids"])
    eos = getattr(tokenizer, "eos_token_id", None)
    if special and ids and eos is not None and ids[-1] == eos:
        added = tokenizer("", add_special_tokens=True)["input_ids"]  # what the tokenizer wraps any text in
        if added and added[-1] == eos:
            ids = ids[:-1]
    return ids
