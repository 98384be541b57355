"""Preference rows -> (prompt, chosen, rejected) -> token ids, with bad rows counted, not trained on.

Row schemas (picked from the columns present):
  explicit   prompt + chosen + rejected; each a string or a list of {role, content} messages
             (prompt string = one user turn; completion string = one assistant turn)
  implicit   chosen + rejected message lists that share their first turns: the shared turns are the prompt
  hh         Anthropic HH-RLHF: chosen / rejected are whole transcripts "\\n\\nHuman: ...\\n\\nAssistant: ...";
             the prompt is everything up to the last "\\n\\nAssistant:" (parsed into turns by
             `tunelab.data.conversations.hh_messages`, as SFT does) and must be the same in both

Tokens: the prompt is rendered with the chat template up to the generation prompt; each completion is the
tokens the full rendering (prompt + assistant reply, end-of-turn included) adds after it, so the model
learns where the reply stops. Completions are truncated to max_length − prompt tokens.

Bad rows (chosen == rejected, an empty completion, HH prompts that differ or lack an assistant turn, a
prompt that leaves no room for a completion within max_length) are dropped and counted per reason with
their first row numbers (0-based, in the table as read).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tunelab.data.bad_rows import BadRows
from tunelab.data.conversations import Message, hh_messages
from tunelab.errors import TunelabError
from tunelab.eval.chat_format import chat_text, encode_text
from tunelab.train.lm_loss import IGNORE
from tunelab.train.tokenize_cache import cache_key, load_ragged, save_ragged, templated_extra

HH_ASSISTANT = "\n\nAssistant:"


@dataclass(frozen=True)
class Pair:
    row: int
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]


def as_messages(value: Any, role: str) -> list[Message] | None:
    """A string -> one `role` turn; a message list as is; anything else (missing) -> None."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list | tuple | np.ndarray) and all(isinstance(m, dict) and "role" in m for m in value):
        return [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in value]
    return None


def split_hh(chosen: str, rejected: str) -> tuple[list[Message], str, str] | str:
    """(prompt turns, chosen reply, rejected reply), or the reason the transcripts are a bad row."""
    cut = chosen.rfind(HH_ASSISTANT)
    if cut < 0:
        return "no_assistant_turn"
    prompt = chosen[:cut + len(HH_ASSISTANT)]
    if not rejected.startswith(prompt):
        return "prompts_differ"
    turns = hh_messages(prompt)
    if not turns or turns[-1]["role"] != "user":
        return "no_assistant_turn"
    return turns, chosen[len(prompt):].strip(), rejected[len(prompt):].strip()


def row_pair(row: dict[str, Any], number: int, hh: bool) -> Pair | str:
    """One table row as a Pair, or the reason it is a bad row."""
    if hh:
        parts = split_hh(str(row.get("chosen") or ""), str(row.get("rejected") or ""))
        if isinstance(parts, str):
            return parts
        prompt, chosen_text, rejected_text = parts
        chosen = [{"role": "assistant", "content": chosen_text}]
        rejected = [{"role": "assistant", "content": rejected_text}]
    else:
        chosen, rejected = as_messages(row.get("chosen"), "assistant"), as_messages(row.get("rejected"), "assistant")
        if chosen is None or rejected is None:
            return "missing_completion"
        prompt = as_messages(row.get("prompt"), "user") if "prompt" in row else []
        if prompt is None:
            return "missing_prompt"
        if not prompt:  # implicit prompt: the turns both conversations share
            shared = 0
            while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
                shared += 1
            prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        elif chosen[:len(prompt)] == prompt and rejected[:len(prompt)] == prompt:
            # UltraFeedback-style rows: a prompt column *and* whole conversations that repeat it
            chosen, rejected = chosen[len(prompt):], rejected[len(prompt):]
    if not any(m["content"].strip() for m in chosen) or not any(m["content"].strip() for m in rejected):
        return "empty_completion"
    if chosen == rejected:
        return "chosen_equals_rejected"
    return Pair(number, prompt, chosen, rejected)


def is_hh(frame: pd.DataFrame, fmt: str) -> bool:
    """HH when asked for (data.format / the registry says hh), or when chosen transcripts start "\\n\\nHuman:"."""
    if fmt == "hh":
        return True
    if fmt != "auto" or "chosen" not in frame.columns or len(frame) == 0:
        return False
    first = frame["chosen"].iloc[0]
    return isinstance(first, str) and first.lstrip(" ").startswith("\n\nHuman:")


ROLES = ("prompt", "chosen", "rejected", "system")


def frame_pairs(frame: pd.DataFrame, fmt: str = "auto", system: str | None = None,
                source: str = "data", columns: dict[str, str] | None = None) -> tuple[list[Pair], BadRows]:
    """Every good row as a Pair, and the bad ones counted. `columns` maps roles (prompt, chosen, rejected,
    system) to the table's names, e.g. Orca pairs' {prompt: input}; a `system` column gives each row its
    own system message (data.system, when set, wins)."""
    renames = {column: role for role, column in (columns or {}).items() if role in ROLES}
    missing = [column for column in renames if column not in frame.columns]
    if missing:
        raise TunelabError(f"data.columns: {missing[0]!r} not in {source} (columns: {list(frame.columns)})")
    frame = frame.rename(columns=renames)
    for needed in ("chosen", "rejected"):
        if needed not in frame.columns:
            shown = [c for c in frame.columns if not str(c).startswith("_")]
            raise TunelabError(f"data: {source} has no '{needed}' column (columns: {shown}); "
                               "task dpo reads prompt/chosen/rejected rows or HH-RLHF transcripts")
    hh = is_hh(frame, fmt)
    pairs, bad = [], BadRows()
    for number, row in enumerate(frame.to_dict(orient="records")):
        pair = row_pair(row, number, hh)
        if isinstance(pair, str):
            bad.add(pair, number)
            continue
        row_system = system or (row.get("system") if isinstance(row.get("system"), str) else None)
        if row_system and row_system.strip():
            pair = Pair(pair.row, [{"role": "system", "content": row_system}, *pair.prompt], pair.chosen,
                        pair.rejected)
        pairs.append(pair)
    return pairs, bad


@dataclass
class PairTokens:
    """Token ids per kept pair: prompt (rendered to the generation prompt), chosen and rejected completions."""

    rows: np.ndarray  # source row number of each pair
    prompt: list[np.ndarray]
    chosen: list[np.ndarray]
    rejected: list[np.ndarray]
    key: str = ""  # the token cache key (reference log-probs are cached under it)

    def __len__(self) -> int:
        return len(self.rows)

    def lengths(self) -> np.ndarray:
        """Tokens of the longer of the two rows of each pair (for length-bucketed batches)."""
        return np.asarray([len(p) + max(len(c), len(r))
                           for p, c, r in zip(self.prompt, self.chosen, self.rejected, strict=True)], dtype=np.int64)


def completion_ids(tokenizer: Any, prompt: list[Message], prompt_ids: list[int],
                   completion: list[Message]) -> list[int]:
    full = encode_text(tokenizer, chat_text(tokenizer, [*prompt, *completion], add_generation_prompt=False))
    if full[:len(prompt_ids)] != prompt_ids:
        raise TunelabError("the chat template does not render the prompt as a prefix of prompt + reply; "
                           "completion tokens cannot be located for this tokenizer")
    return full[len(prompt_ids):]


def encode_pairs(tokenizer: Any, pairs: list[Pair], max_length: int, bad: BadRows,
                 cache_dir: Path | None = None, tokenizer_id: str = "") -> PairTokens:
    """Tokenise (or read from the cache) and count prompts with no room left as bad rows in `bad`.

    Cache: one ragged .npz, each row [source row, |p|, |c|, |r|, p..., c..., r...], keyed by the pairs,
    max_length, the tokenizer fingerprint and the chat template."""
    texts = [json.dumps([p.row, p.prompt, p.chosen, p.rejected], sort_keys=True, ensure_ascii=False) for p in pairs]
    key = "dpo-" + cache_key(tokenizer_id, texts, max_length, templated_extra(tokenizer, "dpo-v1"))
    path = Path(cache_dir) / f"{key}.npz" if cache_dir is not None else None
    cached = load_ragged(path, "ids") if path is not None else None
    if cached is None:
        packed = [x for x in (encode_pair(tokenizer, p, max_length) for p in pairs) if x is not None]
        if path is not None:
            save_ragged(path, ids=packed)
    else:
        packed = cached[0]
    kept = {int(x[0]) for x in packed}
    for pair in pairs:
        if pair.row not in kept:
            bad.add("prompt_too_long", pair.row)
    tokens = PairTokens(np.asarray([int(x[0]) for x in packed], dtype=np.int64), [], [], [], key)
    for x in packed:
        p, c, r = (int(n) for n in x[1:4])
        tokens.prompt.append(x[4:4 + p])
        tokens.chosen.append(x[4 + p:4 + p + c])
        tokens.rejected.append(x[4 + p + c:4 + p + c + r])
    return tokens


def encode_pair(tokenizer: Any, pair: Pair, max_length: int) -> np.ndarray | None:
    """The cache row of one pair, or None when the prompt leaves no completion token within max_length."""
    prompt_ids = encode_text(tokenizer, chat_text(tokenizer, pair.prompt, add_generation_prompt=True))
    room = max_length - len(prompt_ids)
    if room < 1 or not prompt_ids:
        return None
    chosen = completion_ids(tokenizer, pair.prompt, prompt_ids, pair.chosen)[:room]
    rejected = completion_ids(tokenizer, pair.prompt, prompt_ids, pair.rejected)[:room]
    if not chosen or not rejected:
        return None
    return np.asarray([pair.row, len(prompt_ids), len(chosen), len(rejected), *prompt_ids, *chosen, *rejected],
                      dtype=np.int64)


def collate_pairs(tokens: PairTokens, index: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """(2P, T) right-padded rows: [prompt, chosen] for the P pairs, then [prompt, rejected].

    targets[r, t] = ids[r, t+1] where token t+1 is a completion token, else IGNORE (pre-shifted, as in
    tunelab.train.lm_loss), so the summed log-prob covers exactly the completion."""
    sequences = [(tokens.prompt[i], tokens.chosen[i]) for i in index] + [(tokens.prompt[i], tokens.rejected[i])
                                                                          for i in index]
    width = max(len(p) + len(c) for p, c in sequences)
    input_ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    targets = np.full((len(sequences), width), IGNORE, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for r, (p, c) in enumerate(sequences):
        n = len(p) + len(c)
        input_ids[r, :n] = np.concatenate([p, c])
        mask[r, :n] = 1
        targets[r, len(p) - 1:n - 1] = c  # position t predicts token t+1
    return {"input_ids": torch.from_numpy(input_ids), "targets": torch.from_numpy(targets),
            "attention_mask": torch.from_numpy(mask)}
