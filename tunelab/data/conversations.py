"""Rows of any supported SFT schema -> conversations: lists of {role, content} messages.

Schemas (data.format, or auto from the columns present; data.columns renames roles to your columns):
  instruction        instruction [+ input/context] -> output/response        (Dolly, Alpaca)
  messages           a list of {role, content}                                (UltraChat)
  prompt_completion  prompt -> completion                                     (GSM8K question -> answer)
  pairs              source -> target, user turn from data.prompt_template    (translation)
  hh                 Anthropic HH text "\\n\\nHuman: ...\\n\\nAssistant: ..." -> turns, plus completion

A row that cannot become a trainable conversation is a bad row, counted by kind (`tunelab.data.bad_rows`):
missing_field (an empty cell where the schema needs text), malformed_messages (not a list of {role,
content}), no_assistant_turn, empty_answer (the last assistant turn is blank). The SFT task adds
prompt_too_long (no answer token left within model.max_length).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from tunelab.config import DataConfig
from tunelab.data.bad_rows import BadRows
from tunelab.data.tables import ROW
from tunelab.errors import TunelabError

Message = dict[str, str]

ROLE_DEFAULTS = {
    "instruction": "instruction", "input": "context", "output": "response", "messages": "messages",
    "prompt": "prompt", "completion": "completion", "source": "source", "target": "target",
}
FORMAT_COLUMNS = {
    "messages": ["messages"],
    "instruction": ["instruction", "output"],
    "prompt_completion": ["prompt", "completion"],
    "pairs": ["source", "target"],
    "hh": ["prompt", "completion"],
}
HH_TURN = re.compile(r"\n\n(Human|Assistant):\s?")


def column(cfg: DataConfig, role: str, defaults: dict[str, str] | None = None) -> str:
    return cfg.columns.get(role) or (defaults or {}).get(role) or ROLE_DEFAULTS[role]


def detect_format(frame: pd.DataFrame, cfg: DataConfig, defaults: dict[str, str]) -> str:
    if cfg.format != "auto":
        return cfg.format
    for fmt, roles in FORMAT_COLUMNS.items():
        if fmt != "hh" and all(column(cfg, role, defaults) in frame.columns for role in roles):
            return fmt
    raise TunelabError(
        f"data.format: cannot tell the SFT schema from columns {list(frame.columns)}; set data.format "
        "(instruction, messages, prompt_completion, pairs, hh) and data.columns")


class BadRow(ValueError):
    """A row that cannot become a conversation; the message is its bad-row kind."""


def to_conversations(frame: pd.DataFrame, cfg: DataConfig, fmt: str, defaults: dict[str, str] | None = None,
                     source: str = "data") -> list[list[Message]]:
    """The good rows' conversations (bad rows dropped; `read_conversations` also says which)."""
    return read_conversations(frame, cfg, fmt, defaults, source)[0]


def read_conversations(frame: pd.DataFrame, cfg: DataConfig, fmt: str, defaults: dict[str, str] | None = None,
                       source: str = "data") -> tuple[list[list[Message]], list[int], BadRows]:
    """(conversations, their row numbers in `frame`, the bad rows counted by kind)."""
    defaults = defaults or {}
    needed = [column(cfg, role, defaults) for role in FORMAT_COLUMNS[fmt]]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise TunelabError(f"data.columns: column '{missing[0]}' not in {source} (columns: {list(frame.columns)})")
    conversations, rows, bad = [], [], BadRows()
    for position, row in enumerate(frame.to_dict(orient="records")):
        row_number = int(row.get(ROW, position))  # the row as read, when the table numbered its rows
        try:
            messages = row_messages(row, cfg, fmt, defaults)
        except BadRow as reason:
            bad.add(str(reason), row_number)
            continue
        if cfg.system:
            messages = [{"role": "system", "content": cfg.system}, *messages]
        conversations.append(messages)
        rows.append(row_number)
    return conversations, rows, bad


def row_messages(row: dict[str, Any], cfg: DataConfig, fmt: str, defaults: dict[str, str]) -> list[Message]:
    """One row as messages ending in a non-empty assistant turn, or BadRow(kind)."""
    messages = raw_messages(row, cfg, fmt, defaults)
    answers = [m for m in messages if m["role"] == "assistant"]
    if not answers:
        raise BadRow("no_assistant_turn")
    if not answers[-1]["content"].strip():
        raise BadRow("empty_answer")
    return messages


def raw_messages(row: dict[str, Any], cfg: DataConfig, fmt: str, defaults: dict[str, str]) -> list[Message]:
    def text(role: str) -> str:
        value = row.get(column(cfg, role, defaults))
        if value is None or (isinstance(value, float) and pd.isna(value)):
            raise BadRow("missing_field")
        return str(value)

    if fmt == "messages":
        messages = row[column(cfg, "messages", defaults)]  # a list (JSON) or an ndarray (Parquet, `datasets`)
        if not isinstance(messages, list | tuple | np.ndarray) or not all(
                isinstance(m, dict) and "role" in m for m in messages):
            raise BadRow("malformed_messages")
        return [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in messages]
    if fmt == "instruction":
        context = row.get(column(cfg, "input", defaults))
        user = text("instruction") + (f"\n\n{context}" if isinstance(context, str) and context.strip() else "")
        return [{"role": "user", "content": user}, {"role": "assistant", "content": text("output")}]
    if fmt == "pairs":
        user = cfg.prompt_template.replace("{source}", text("source"))
        return [{"role": "user", "content": user}, {"role": "assistant", "content": text("target")}]
    if fmt == "hh":
        return hh_messages(text("prompt")) + [{"role": "assistant", "content": text("completion").strip()}]
    return [{"role": "user", "content": text("prompt")}, {"role": "assistant", "content": text("completion")}]


def hh_messages(dialogue: str) -> list[Message]:
    """'\\n\\nHuman: hi\\n\\nAssistant: hello\\n\\nHuman: ...\\n\\nAssistant:' -> turns (last empty one dropped)."""
    parts = HH_TURN.split("\n\n" + dialogue.strip() if not dialogue.startswith("\n\n") else dialogue)
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=False):
        if content.strip():
            messages.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    return messages
