"""Conversations -> token ids with targets on assistant tokens only.

Each assistant turn i is located by rendering the conversation up to the turn's generation prompt
and up to the end of the turn: the tokens between those two prefixes (the answer, the end-of-turn
marker / EOS) are the only ones with a loss. The tokens must form exact prefixes of the full
conversation's tokens; a template that breaks this is reported rather than silently mis-masked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import TunelabError
from tunelab.eval.chat_format import chat_text, encode_text
from tunelab.train.lm_loss import IGNORE
from tunelab.train.tokenize_cache import cache_key, load_array, load_ragged, save_ragged, templated_extra


def assistant_mask(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[bool]]:
    """Token ids of the whole conversation and, per token, whether it belongs to an assistant answer."""
    ids = encode_text(tokenizer, chat_text(tokenizer, messages, add_generation_prompt=False))
    mask = [False] * len(ids)
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = encode_text(tokenizer, chat_text(tokenizer, messages[:turn], add_generation_prompt=True))
        end = encode_text(tokenizer, chat_text(tokenizer, messages[: turn + 1], add_generation_prompt=False))
        if ids[: len(end)] != end or end[: len(start)] != start:
            raise TunelabError("the chat template does not render turns as prefixes of the conversation; "
                               "assistant-only loss masks cannot be built for this tokenizer")
        for position in range(len(start), len(end)):
            mask[position] = True
    return ids, mask


def shifted_targets(ids: list[int], mask: list[bool]) -> np.ndarray:
    """targets[t] = ids[t+1] where token t+1 is an assistant token, else IGNORE (and IGNORE at the end)."""
    targets = np.full(len(ids), IGNORE, dtype=np.int64)
    following = np.asarray(ids[1:], dtype=np.int64)
    learn = np.asarray(mask[1:], dtype=bool)
    targets[:-1][learn] = following[learn]
    return targets


def encode_conversations(tokenizer: Any, conversations: list[list[dict[str, str]]], max_length: int,
                         cache_dir: Path | None = None, tokenizer_id: str = "",
                         ) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """(ids per example, targets per example, positions of the conversations dropped because truncation
    at max_length left no answer token).

    With `cache_dir`, the result is stored once per (tokenizer, conversations, max_length) and reused."""
    path = None
    if cache_dir is not None:
        texts = [json.dumps(c, sort_keys=True, ensure_ascii=False) for c in conversations]
        key = cache_key(tokenizer_id, texts, max_length, templated_extra(tokenizer, "sft-v3"))
        path = Path(cache_dir) / f"sft-{key}.npz"
        cached = load_ragged(path, "ids", "targets")
        if cached is not None:
            return cached[0], cached[1], [int(i) for i in load_array(path, "dropped")]
    all_ids, all_targets, dropped = [], [], []
    for position, messages in enumerate(conversations):
        ids, mask = assistant_mask(tokenizer, messages)
        targets = shifted_targets(ids, mask)[:max_length]
        ids = ids[:max_length]
        if len(ids) < 2 or not (targets != IGNORE).any():
            dropped.append(position)
            continue
        targets[-1] = IGNORE if len(ids) == max_length else targets[-1]
        all_ids.append(np.asarray(ids, dtype=np.int64))
        all_targets.append(targets)
    if path is not None:
        save_ragged(path, ids=all_ids, targets=all_targets, extra={"dropped": np.asarray(dropped, dtype=np.int64)})
    return all_ids, all_targets, dropped
