"""Question/context pairs -> fixed-size token windows with character offsets and span labels (cached).

A context longer than `max_length` minus the question becomes several windows: the fast tokenizer cuts
only the context (truncation="only_second") and consecutive windows share `stride` tokens, so an answer
near a cut is whole in at least one window. Each window keeps, per token, the character span it covers in
the context ((-1, -1) for question and special tokens), which turns predicted token spans back into the
exact context substring.

Training labels (the transformers question-answering recipe): the first gold answer's first and last
token when the answer lies entirely inside the window's context tokens, else position 0 (the [CLS]
token), which is also the label of an unanswerable question.

Cached under the token cache as one .npz of flat int32 arrays (read with allow_pickle=False), keyed by
tokenizer fingerprint, texts, answers, max_length and stride.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.progress import progress_bar
from tunelab.rundir import atomic_write_with
from tunelab.train.tokenize_cache import CHUNK, cache_key

VERSION = "qa-windows-v1"


@dataclass
class QAWindows:
    ids: list[np.ndarray]  # token ids per window
    type_ids: list[np.ndarray] | None  # segment ids (0 question, 1 context) when the model takes them
    offsets: list[np.ndarray]  # (T, 2) character span in the context per token; -1 outside the context
    example: np.ndarray  # window -> index of its question
    start: np.ndarray  # label: first answer token, 0 = no answer in this window
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))


def question_lengths(tokenizer: Any, questions: list[str]) -> np.ndarray:
    """Question tokens without special tokens (a question must leave room for context + stride)."""
    encoded = tokenizer(questions, add_special_tokens=False)["input_ids"] if questions else []
    return np.fromiter((len(x) for x in encoded), dtype=np.int64, count=len(questions))


def max_question_tokens(tokenizer: Any, max_length: int, stride: int) -> int:
    """The longest question that still leaves a window of more than `stride` context tokens."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    return max_length - specials - stride - 1


def span_labels(offsets: np.ndarray, answer: tuple[str, int] | None) -> tuple[int, int]:
    """(start token, end token) of the answer's characters in this window, or (0, 0) when it is not whole
    inside the window's context tokens."""
    if answer is None:
        return 0, 0
    text, char_start = answer
    char_end = char_start + len(text)
    context = np.flatnonzero(offsets[:, 0] >= 0)
    if len(context) == 0 or offsets[context[0], 0] > char_start or offsets[context[-1], 1] < char_end:
        return 0, 0
    starts = context[offsets[context, 0] <= char_start]
    ends = context[offsets[context, 1] >= char_end]
    return int(starts[-1]), int(ends[0])


def encode_windows(tokenizer: Any, questions: list[str], contexts: list[str],
                   answers: list[list[tuple[str, int]]], max_length: int, stride: int,
                   cache_dir: Path | None = None, tokenizer_id: str = "", description: str = "tokenising",
                   ) -> QAWindows:
    with_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    path = None
    if cache_dir is not None:
        texts = questions + contexts + [json.dumps(a) for a in answers]
        path = Path(cache_dir) / f"{cache_key(tokenizer_id, texts, max_length, f'{VERSION}:{stride}:{with_types}')}.npz"
        cached = load_windows(path, with_types)
        if cached is not None:
            return cached
    ids, types, offsets, example, start, end = [], [], [], [], [], []
    with progress_bar(description, total=len(questions)) as bar:
        for first in range(0, len(questions), CHUNK):
            chunk = slice(first, first + CHUNK)
            encoded = tokenizer(questions[chunk], contexts[chunk], truncation="only_second", max_length=max_length,
                                stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True)
            for w, row_ids in enumerate(encoded["input_ids"]):
                row = first + int(encoded["overflow_to_sample_mapping"][w])
                sequence = encoded.sequence_ids(w)
                spans = np.array([span if seq == 1 else (-1, -1)
                                  for span, seq in zip(encoded["offset_mapping"][w], sequence, strict=True)],
                                 dtype=np.int64).reshape(-1, 2)
                s, e = span_labels(spans, answers[row][0] if answers[row] else None)
                ids.append(np.asarray(row_ids, dtype=np.int64))
                if with_types:
                    types.append(np.asarray(encoded["token_type_ids"][w], dtype=np.int64))
                offsets.append(spans)
                example.append(row)
                start.append(s)
                end.append(e)
            bar.advance(len(questions[chunk]))
    windows = QAWindows(ids, types if with_types else None, offsets, np.asarray(example, dtype=np.int64),
                        np.asarray(start, dtype=np.int64), np.asarray(end, dtype=np.int64))
    if path is not None:
        save_windows(path, windows)
    return windows


def save_windows(path: Path, windows: QAWindows) -> None:
    lengths = windows.lengths
    arrays = {"row_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
              "ids": np.concatenate(windows.ids).astype(np.int32),
              "offsets": np.concatenate(windows.offsets).astype(np.int32),
              "example": windows.example, "start": windows.start, "end": windows.end}
    if windows.type_ids is not None:
        arrays["type_ids"] = np.concatenate(windows.type_ids).astype(np.int32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write_with(path, write)


def load_windows(path: Path, with_types: bool) -> QAWindows | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as stored:
        data = {name: stored[name] for name in stored.files}
    if with_types != ("type_ids" in data):
        return None
    bounds = list(zip(data["row_offsets"][:-1], data["row_offsets"][1:], strict=True))

    def split(flat: np.ndarray) -> list[np.ndarray]:
        return [flat[a:b].astype(np.int64) for a, b in bounds]

    return QAWindows(split(data["ids"]), split(data["type_ids"]) if with_types else None, split(data["offsets"]),
                     data["example"].astype(np.int64), data["start"].astype(np.int64), data["end"].astype(np.int64))
