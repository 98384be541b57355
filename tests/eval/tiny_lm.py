"""A tiny random Llama and a word-level tokenizer: generation and perplexity tests in milliseconds.

The tokenizer adds BOS like a base Llama and has no chat template (so the fallback template is used);
`with_template` gives it a small template to exercise the templated path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
WORDS = ("### : User Assistant System the a is of and to in what why how who tell me about explain "
         "something interesting love london ai model language cat dog sun moon red blue green one two "
         "three facts story friends enemies time future rain snow tree river city big small < > script "
         "alert hi . , ? !").split()
VOCAB = {token: i for i, token in enumerate(SPECIALS + WORDS)}
TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
            "{% if add_generation_prompt %}Assistant :{% endif %}")


def word_tokenizer(vocab: dict[str, int], template: str | None = None, add_bos: bool = True,
                   ) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over `vocab` (which starts with <pad> <s> </s> <unk>)."""
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = template
    return tokenizer


def random_llama(vocab_size: int, seed: int = 0, head_scale: float = 20.0) -> LlamaForCausalLM:
    """A 2-layer random Llama with a scaled-up output head: the default 0.02-std head caps logits near 0.6,
    too flat for greedy ties to break or for a frozen head plus adapters to learn anything."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    return model


def tiny_tokenizer(with_template: bool = False) -> PreTrainedTokenizerFast:
    return word_tokenizer(VOCAB, TEMPLATE if with_template else None)


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    return random_llama(len(VOCAB), seed)


def save_tiny(folder: Path) -> Path:
    """The tiny model + tokenizer as a local model directory (what `resolve_model` accepts)."""
    tiny_llama().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
