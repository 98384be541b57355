"""A word-level tokenizer with a ChatML-like template (turn headers match the generation prompt, as
in real chat templates) and a tiny random Llama: SFT tests in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<turn>"]
WORDS = ("user assistant system : ### User: Assistant: System: what colour is the sky sea grass sun say hi hello "
         "red blue green yellow please tell me now and a one two three".split())
VOCAB = {token: i for i, token in enumerate(SPECIALS + WORDS)}
TEMPLATE = ("{% for m in messages %}<turn> {{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
            "{% if add_generation_prompt %}<turn> assistant :{% endif %}")


def chat_tokenizer(with_template: bool = True) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    if with_template:
        tokenizer.chat_template = TEMPLATE
    return tokenizer


def chat_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # a pretrained head has large weights; the random 0.02-std one caps logits near 0.6,
        model.lm_head.weight.mul_(30)  # which a frozen head + adapters could never sharpen
    return model


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
