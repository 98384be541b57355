"""A byte-level BPE tokenizer trained in milliseconds (GPT-2 style, as SmolLM2's) with ChatML specials and a
chat template, and a tiny random Llama over it: GGUF round trips in a second instead of half a minute."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = ["The capital of France is Paris, and the capital of Spain is Madrid.",
          "Once upon a time there was a small robot who liked to count: 1, 2, 3, 42, 1000.",
          "Hello, how are you today? I am fine, thank you! What's new?",
          "def add(a, b):\n    return a + b  # adds two numbers",
          "Tokenizers split text into pieces; byte-level BPE never meets an unknown character."]


def byte_bpe_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>",
                                        eos_token="<|im_end|>", pad_token="<|im_end|>",
                                        unk_token="<|endoftext|>")
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def random_llama(vocab_size: int, tied: bool, seed: int = 0) -> LlamaForCausalLM:
    """2 layers, 4 query heads over 2 kv heads (GQA: q and k are permuted with different head counts),
    residual writes scaled up so greedy decoding wanders instead of repeating the prompt's last token."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         rope_theta=100000.0, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                         pad_token_id=2, tie_word_embeddings=tied)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(30.0)
            layer.mlp.down_proj.weight.mul_(30.0)
        model.get_output_embeddings().weight.mul_(1.0 if tied else 20.0)
    return model
