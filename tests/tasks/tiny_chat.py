"""A word-level tokenizer with a ChatML-like template (turn headers match the generation prompt, as
in real chat templates) and a tiny random Llama: SFT tests in seconds."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from tests.eval.tiny_lm import random_llama, word_tokenizer

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<turn>"]
WORDS = ("user assistant system : ### User: Assistant: System: what colour is the sky sea grass sun say hi hello "
         "red blue green yellow please tell me now and a one two three".split())
VOCAB = {token: i for i, token in enumerate(SPECIALS + WORDS)}
TEMPLATE = ("{% for m in messages %}<turn> {{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
            "{% if add_generation_prompt %}<turn> assistant :{% endif %}")


def chat_tokenizer(with_template: bool = True) -> PreTrainedTokenizerFast:
    return word_tokenizer(VOCAB, TEMPLATE if with_template else None, add_bos=False)


def chat_llama(seed: int = 0) -> LlamaForCausalLM:
    return random_llama(len(VOCAB), seed, head_scale=30.0).train()


def save_chat_model(folder: Path) -> Path:
    chat_llama().save_pretrained(folder)
    chat_tokenizer().save_pretrained(folder)
    return folder


QA = [("what colour is the sky", "blue"), ("what colour is the grass", "green"),
      ("what colour is the sun", "yellow"), ("say hi", "hello hello")]


def write_toy_sft(path: Path, repeats: int = 8, schema: str = "prompt_completion") -> Path:
    rows = []
    for _ in range(repeats):
        for question, answer in QA:
            if schema == "dolly":
                rows.append({"instruction": question, "context": "", "response": answer, "category": "open_qa"})
            else:
                rows.append({"prompt": question, "completion": answer})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path
