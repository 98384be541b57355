"""Prompt rows for reinforcement fine-tuning: a prompt to answer plus the columns rewards read.

Columns: the prompt comes from the `prompt` role (data.columns, else the registered dataset's, else a
column named prompt), the gold answer from the `answer` role (else the dataset's completion column, e.g.
GSM8K's worked solution, else a column named answer). Rewards receive every column of the row under its
own name, and the answer also as `answer`.

Tokens: the prompt is one user turn (after data.system, if set) rendered with the chat template up to
the generation prompt, so completions are sampled exactly where an assistant reply starts.
Bad rows (empty prompt, no answer when one is needed, a prompt leaving no room for max_new_tokens within
model.max_length) are dropped and counted per reason with their first row numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tunelab.config import DataConfig
from tunelab.data.bad_rows import BadRows
from tunelab.data.tables import ROW, load_frames, registered_spec
from tunelab.errors import TunelabError
from tunelab.eval.chat_format import chat_text, encode_text, prompt_messages


@dataclass
class PromptRows:
    rows: np.ndarray  # (N,) row numbers in the table as read
    prompts: list[str]  # the user turn
    ids: list[np.ndarray]  # chat-formatted prompt tokens, ending with the generation prompt
    columns: dict[str, list[Any]]  # every column of the kept rows, plus `answer`

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        return np.asarray([len(x) for x in self.ids], dtype=np.int64)

    def columns_for(self, index: np.ndarray, repeats: int) -> dict[str, list[Any]]:
        """Columns of the rows in `index`, each repeated for the row's `repeats` completions."""
        return {name: [values[i] for i in index for _ in range(repeats)] for name, values in self.columns.items()}


def column_roles(cfg: DataConfig, frame: pd.DataFrame, spec_columns: dict[str, str], source: str,
                 need_answer: bool) -> tuple[str, str | None]:
    prompt = cfg.columns.get("prompt") or spec_columns.get("prompt") or "prompt"
    answer = cfg.columns.get("answer") or spec_columns.get("answer") or spec_columns.get("completion") or "answer"
    if prompt not in frame.columns:
        raise TunelabError(f"data.columns.prompt: column {prompt!r} not in {source} (columns: "
                           f"{', '.join(map(str, frame.columns))})")
    if answer not in frame.columns:
        if need_answer:
            raise TunelabError(f"data.columns.answer: column {answer!r} not in {source}; the rewards or "
                               "grpo.answer need the gold answer (set grpo.answer: none if there is none)")
        answer = None
    return prompt, answer


def encode_prompt_rows(tokenizer: Any, frame: pd.DataFrame, prompt_col: str, answer_col: str | None,
                       system: str | None, max_prompt: int, bad: BadRows) -> PromptRows:
    kept: list[int] = []
    prompts, ids = [], []
    for position, values in enumerate(frame.to_dict("records")):
        number = int(values.get(ROW, position))  # the row as read, when the table was numbered
        text = values.get(prompt_col)
        if not isinstance(text, str) or not text.strip():
            bad.add("empty_prompt", number)
            continue
        answer = values.get(answer_col) if answer_col is not None else ""
        if answer is None or (isinstance(answer, float) and np.isnan(answer)) or not str(answer).strip():
            bad.add("missing_answer", number)
            continue
        tokens = encode_text(tokenizer, chat_text(tokenizer, prompt_messages(text, system), add_generation_prompt=True))
        if len(tokens) > max_prompt:
            bad.add("prompt_too_long", number)
            continue
        kept.append(position)
        prompts.append(text)
        ids.append(np.asarray(tokens, dtype=np.int64))
    subset = frame.iloc[kept]
    columns = {str(name): subset[name].tolist() for name in subset.columns if name != ROW}
    if answer_col is not None:
        columns["answer"] = subset[answer_col].tolist()
    rows = [int(frame[ROW].iloc[i]) for i in kept] if ROW in frame.columns else kept
    return PromptRows(np.asarray(rows, dtype=np.int64), prompts, ids, columns)


def load_prompt_rows(cfg: DataConfig, tokenizer: Any, max_prompt: int, need_answer: bool,
                     ) -> tuple[dict[str, PromptRows], dict[str, BadRows]]:
    """Train and eval prompt rows (the split and limits of any dataset), with their bad-row counts."""
    if cfg.format != "auto":
        raise TunelabError(f"data.format: task grpo reads prompt rows (auto), not {cfg.format!r}")
    spec = registered_spec(cfg.dataset)
    stratify = cfg.columns.get("answer") or (spec.columns.get("answer") if spec is not None else None) or "answer"
    frames = load_frames(cfg, stratify_on=stratify)  # a yes/no set keeps its balance in the held-out split
    spec_columns = dict(frames.spec.columns) if frames.spec is not None else {}
    rows, bad = {}, {}
    for split, frame in (("train", frames.train), ("eval", frames.eval)):
        prompt_col, answer_col = column_roles(cfg, frame, spec_columns, f"the {split} data of {frames.source}",
                                              need_answer)
        bad[split] = BadRows()
        rows[split] = encode_prompt_rows(tokenizer, frame, prompt_col, answer_col, cfg.system, max_prompt, bad[split])
    if not len(rows["train"]) or not len(rows["eval"]):
        raise TunelabError(f"data: no usable prompt (train {len(rows['train'])}, eval {len(rows['eval'])}); "
                           f"bad rows: {bad['train'].describe() or 'none'}")
    return rows, bad
