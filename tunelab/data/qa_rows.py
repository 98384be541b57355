"""Extractive-QA rows: (id, question, context, gold answers) from SQuAD JSON, JSONL/CSV/Parquet tables,
`datasets` folders or hub ids (rajpurkar/squad, rajpurkar/squad_v2), with bad rows counted, not used.

Accepted shapes:
  SQuAD JSON   {"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers":
               [{"text", "answer_start"}], "is_impossible"?}]}]}]}  (v1.1 and v2.0)
  table rows   question, context, answers; answers either {"text": [...], "answer_start": [...]} (the
               `datasets` layout) or [{"text", "answer_start"}, ...]; empty = unanswerable. Optional id,
               title (used to hold out whole articles) and constructed. Column names map through
               data.columns {question: ..., context: ..., answers: ..., id: ...}.

Bad rows (an empty question or context, an answer whose text is not the context's substring at its
answer_start) are dropped and counted per reason with their first row numbers, as the preference task does.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunelab.config import DataConfig
from tunelab.data.bad_rows import BadRows
from tunelab.data.loaders import read_table
from tunelab.errors import TunelabError

ROLES = ("question", "context", "answers", "id")


@dataclass(frozen=True)
class QARows:
    """One split: parallel lists; `answers[i]` is a list of (text, answer_start), empty = unanswerable."""

    ids: list[str]
    questions: list[str]
    contexts: list[str]
    answers: list[list[tuple[str, int]]]
    titles: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def gold(self) -> dict[str, list[str]]:
        return {qid: [text for text, _ in answers] for qid, answers in zip(self.ids, self.answers, strict=True)}


def is_squad_json(path: Path) -> bool:
    if not path.is_file() or not path.name.lower().endswith((".json", ".json.gz")):
        return False
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        head = handle.read(4096).lstrip()
    return head.startswith("{") and '"data"' in head


def read_squad_json(path: Path, key: str) -> pd.DataFrame:
    """Flatten the nested SQuAD layout into one row per question."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            articles = json.load(handle)["data"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TunelabError(f"{key}: {path} is not SQuAD JSON ({type(exc).__name__}: {exc})") from None
    rows = []
    for article in articles:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                rows.append({"id": str(qa.get("id", len(rows))), "title": article.get("title", ""),
                             "question": qa.get("question", ""), "context": paragraph.get("context", ""),
                             "answers": [] if qa.get("is_impossible") else qa.get("answers", [])})
    return pd.DataFrame(rows)


def read_qa_file(ref: str, key: str) -> pd.DataFrame:
    path = Path(ref).expanduser()
    return read_squad_json(path, key) if is_squad_json(path) else read_table(path, key)


def answer_list(value: Any) -> list[tuple[str, int]] | None:
    """Both answer layouts as [(text, start)]; None when the value is neither."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)  # a CSV cell
        except ValueError:
            return None
    if isinstance(value, dict):
        texts, starts = list(value.get("text", [])), list(value.get("answer_start", []))
        if len(texts) != len(starts):
            return None
        return [(str(t), int(s)) for t, s in zip(texts, starts, strict=True)]
    if isinstance(value, list | tuple | np.ndarray):
        out = []
        for item in value:
            if not isinstance(item, dict) or "text" not in item or "answer_start" not in item:
                return None
            out.append((str(item["text"]), int(item["answer_start"])))
        return out
    return None


def frame_rows(frame: pd.DataFrame, columns: dict[str, str], source: str, bad: BadRows) -> QARows:
    """Checked rows of one table; bad rows go to `bad`, not into the result."""
    names = {role: columns.get(role, role) for role in ROLES}
    missing = [names[r] for r in ("question", "context", "answers") if names[r] not in frame.columns]
    if missing:
        raise TunelabError(f"data.columns: {source} has no column {missing[0]!r} (columns: "
                           f"{', '.join(map(str, frame.columns))}); map it with data.columns")
    ids, questions, contexts, answers, titles = [], [], [], [], []
    has_id, has_title = names["id"] in frame.columns, "title" in frame.columns
    seen: set[str] = set()
    for number, row in enumerate(frame.to_dict("records")):
        question, context = str(row[names["question"]] or "").strip(), str(row[names["context"]] or "")
        gold = answer_list(row[names["answers"]])
        if not question:
            bad.add("empty_question", number)
            continue
        if not context.strip():
            bad.add("empty_context", number)
            continue
        if gold is None:
            bad.add("unreadable_answers", number)
            continue
        if any(context[start:start + len(text)] != text for text, start in gold):
            bad.add("answer_not_in_context", number)
            continue
        qid = str(row[names["id"]]) if has_id else str(number)
        if qid in seen:
            bad.add("duplicate_id", number)
            continue
        seen.add(qid)
        ids.append(qid)
        questions.append(question)
        contexts.append(context)
        answers.append(gold)
        titles.append(str(row["title"]) if has_title else context)
    return QARows(ids, questions, contexts, answers, titles)


def holdout_by_article(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out whole articles (title, else context) so no eval paragraph is seen in training."""
    group = frame["title"] if "title" in frame.columns else frame.get("context")
    if group is None:
        raise TunelabError("data: cannot hold out eval rows without a context column")
    keys = np.array(sorted(group.astype(str).unique()))
    if len(keys) < 2:
        raise TunelabError("data: one article only; give data.eval to evaluate on")
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(keys)[:max(1, int(round(len(keys) * fraction)))])
    mask = group.astype(str).isin(held).to_numpy()
    return frame[~mask], frame[mask]


def load_qa_frames(cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Raw train / eval tables for the qa task, after the article holdout and data.limit / eval_limit."""
    from tunelab.assets.datasets import locate
    from tunelab.data.tables import registered_spec, source_frames

    spec = registered_spec(cfg.dataset)
    if spec is not None:
        if spec.task != "qa":
            raise TunelabError(f"data.dataset: '{cfg.dataset}' is a {spec.task} dataset, not one for task qa")
        train = read_table(locate(spec.train, cfg.dataset), "data.dataset")
        evaluation = read_table(locate(spec.eval, cfg.dataset), "data.dataset") if spec.eval else None
        source = cfg.dataset
    elif cfg.train is not None and is_squad_json(Path(cfg.train).expanduser()):
        train, source = read_qa_file(cfg.train, "data.train"), cfg.train
        evaluation = read_qa_file(cfg.eval, "data.eval") if cfg.eval else None
    else:
        train, evaluation, _, source = source_frames(cfg)
        if cfg.eval is not None and is_squad_json(Path(cfg.eval).expanduser()):
            evaluation = read_qa_file(cfg.eval, "data.eval")
    if evaluation is None:
        train, evaluation = holdout_by_article(train, cfg.eval_fraction, cfg.split_seed)
    if cfg.limit is not None:
        train = train.sample(n=min(cfg.limit, len(train)), random_state=cfg.split_seed).sort_index()
    if cfg.eval_limit is not None:
        evaluation = evaluation.sample(n=min(cfg.eval_limit, len(evaluation)), random_state=cfg.split_seed).sort_index()
    if len(train) == 0 or len(evaluation) == 0:
        raise TunelabError(f"data: {source} gives {len(train)} training and {len(evaluation)} eval rows")
    return train.reset_index(drop=True), evaluation.reset_index(drop=True), str(source)
