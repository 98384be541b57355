"""A byte-level BPE tokenizer (GPT-2 style: SmolLM2, Llama 3) as GGUF `tokenizer.ggml.*` metadata.

A GGUF carries no tokenizer.json: llama.cpp (and transformers' GGUF reader) rebuild the tokenizer from
- `tokenizer.ggml.model` = "gpt2" (byte-level BPE) and `tokenizer.ggml.pre`, the name of the regex
  that splits text before BPE (llama.cpp keeps a table of them; see `pre_tokenizer_name`);
- `tokens` (the vocabulary in id order, in the byte alphabet, e.g. "Ġthe"), `token_type` per id
  (1 normal, 3 control = special added tokens such as <|im_end|>, 4 user-defined = other added tokens,
  5 unused = padding rows of an embedding larger than the vocabulary, named [PAD<id>] as llama.cpp does),
  and `merges` as "left right" strings in rank order;
- bos/eos/unk/pad ids, whether encoding adds bos/eos, and the chat template.
"""

from __future__ import annotations

import json
from typing import Any

from tunelab.errors import TunelabError

# the split regex of Llama 3's tokenizer.json, which llama.cpp calls "llama-bpe"
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def backend_state(tokenizer: Any) -> dict[str, Any]:
    """The fast tokenizer's tokenizer.json as a dict; only byte-level BPE maps onto GGUF's "gpt2"."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TunelabError("--gguf needs a fast (tokenizers-backed) tokenizer")
    state = json.loads(backend.to_str())
    byte_level = "ByteLevel" in json.dumps([state.get("pre_tokenizer"), state.get("decoder")])
    if state["model"]["type"] != "BPE" or not byte_level:
        raise TunelabError(f"--gguf writes byte-level BPE tokenizers (GPT-2 style, as SmolLM2); this one is "
                           f"{state['model']['type']}{'' if byte_level else ' without byte-level encoding'}")
    return state


def pre_tokenizer_name(state: dict[str, Any]) -> str:
    """llama.cpp's name for the tokenizer's pre-split; "default" when it matches none of these.

    SmolLM2 as tunelab loads it (converted from its GGUF by transformers) splits like GPT-2, so it is
    written as "gpt2"; llama.cpp's converter of the hub tokenizer writes "smollm" (digits split one by
    one first). Its vocabulary has no multi-digit token, so both give the same ids."""
    pre = state.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    types = [part.get("type") for part in parts]
    if types == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt2"
    if types == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"  # SmolLM's hub tokenizer.json: one token per digit, then GPT-2's split
    if types[:1] == ["Split"] and (parts[0].get("pattern") or {}).get("Regex") == LLAMA3_SPLIT:
        return "llama-bpe"
    return "default"


def adds_prefix_space(state: dict[str, Any]) -> bool:
    """Whether the byte-level pre-tokenizer puts a space before the text (GPT-2 and SmolLM2: no)."""
    pre = state.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    return any(part.get("type") == "ByteLevel" and part.get("add_prefix_space", False) for part in parts)


def vocab_tables(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """(tokens, token types) for ids 0..vocab_size-1."""
    import gguf

    vocab = tokenizer.get_vocab()  # the BPE vocabulary plus added tokens, token -> id
    too_big = [token for token, index in vocab.items() if index >= vocab_size]
    if too_big:
        raise TunelabError(f"--gguf: the tokenizer has ids beyond the model's vocab_size {vocab_size} "
                           f"(e.g. {too_big[0]!r})")
    tokens = [f"[PAD{index}]" for index in range(vocab_size)]
    types = [int(gguf.TokenType.UNUSED)] * vocab_size
    for token, index in vocab.items():
        tokens[index], types[index] = token, int(gguf.TokenType.NORMAL)
    for index, added in tokenizer.added_tokens_decoder.items():
        if index < vocab_size:
            types[index] = int(gguf.TokenType.CONTROL if added.special else gguf.TokenType.USER_DEFINED)
    return tokens, types


def merge_strings(state: dict[str, Any]) -> list[str]:
    """BPE merges as "left right"; tokenizer.json holds pairs (new format) or such strings (old format)."""
    return [" ".join(merge) if isinstance(merge, list) else merge for merge in state["model"].get("merges", [])]


def adds_special(tokenizer: Any) -> tuple[bool, bool]:
    """(adds bos, adds eos) when encoding plain text, read from what the tokenizer actually does."""
    ids = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return bos is not None and ids[:1] == [bos], eos is not None and len(ids) > 1 and ids[-1:] == [eos]


def write_vocab_metadata(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """All `tokenizer.*` keys for a byte-level BPE tokenizer."""
    state = backend_state(tokenizer)
    tokens, types = vocab_tables(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(state))
    writer.add_add_space_prefix(adds_prefix_space(state))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merge_strings(state))
    for add, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                          (writer.add_eos_token_id, tokenizer.eos_token_id),
                          (writer.add_unk_token_id, tokenizer.unk_token_id),
                          (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            add(int(token_id))
    add_bos, add_eos = adds_special(tokenizer)
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(add_eos)
    template = tokenizer.chat_template
    if isinstance(template, dict):  # several named templates: gguf stores them as name/template pairs
        template = [{"name": name, "template": text} for name, text in template.items()]
    if template:
        writer.add_chat_template(template)
