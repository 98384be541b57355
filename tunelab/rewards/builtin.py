"""Built-in rewards. Every reward has the signature a user function has too:

    reward(prompts: list[str], completions: list[str], **columns) -> list[float]

`columns` holds the dataset's columns for each completion (a prompt's G completions see the same row),
plus the keyword settings of the recipe's `args`. Unused columns are absorbed by **_.
"""

from __future__ import annotations

import re
import string
from typing import Any

YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
GSM8K_FINAL = re.compile(r"####\s*(-?[\d,]*\.?\d+)")
ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD answer normalisation)."""
    text = "".join(ch for ch in str(text).lower() if ch not in string.punctuation)
    return " ".join(ARTICLES.sub(" ", text).split())


def first_yes_no(text: str) -> str | None:
    """'yes' or 'no', whichever word comes first in the text; None when neither appears."""
    match = YES_NO.search(text)
    return match.group(1).lower() if match else None


def final_number(text: str) -> float | None:
    """The answer a GSM8K solution states: the number after '####' when present, else the last number."""
    marked = GSM8K_FINAL.search(text)
    found = marked.group(1) if marked else (NUMBER.findall(text) or [None])[-1]
    if found is None:
        return None
    try:
        return float(found.replace(",", ""))
    except ValueError:
        return None


def exact_answer(prompts: list[str], completions: list[str], answer: list[Any], **_: Any) -> list[float]:
    """1 when the normalised completion equals the normalised answer, else 0."""
    return [float(normalize(c) == normalize(a)) for c, a in zip(completions, answer, strict=True)]


def yes_no(prompts: list[str], completions: list[str], answer: list[Any], **_: Any) -> list[float]:
    """1 when the first yes/no word of the completion is the answer ('Yes'/'No'), else 0."""
    return [float(first_yes_no(c) == str(a).strip().lower()) for c, a in zip(completions, answer, strict=True)]


def numeric_answer(prompts: list[str], completions: list[str], answer: list[Any], tolerance: float = 1e-6,
                   **_: Any) -> list[float]:
    """1 when the completion's final number equals the answer's (GSM8K: the number after '####')."""
    out = []
    for completion, gold in zip(completions, answer, strict=True):
        predicted, expected = final_number(completion), final_number(str(gold))
        out.append(float(predicted is not None and expected is not None and abs(predicted - expected) <= tolerance))
    return out


def format_regex(prompts: list[str], completions: list[str], pattern: str = r"^\s*(Yes|No)\b", **_: Any) -> list[float]:
    """1 when the completion matches `pattern` (re.search, DOTALL), else 0."""
    compiled = re.compile(pattern, re.DOTALL)
    return [float(compiled.search(c) is not None) for c in completions]


def length_penalty(prompts: list[str], completions: list[str], max_words: int = 12, per_word: float = 0.05,
                   cap: float = 1.0, **_: Any) -> list[float]:
    """−min(cap, per_word · max(0, words − max_words)): nothing for a short answer, growing with verbosity
    (seed 000's reward pairs this with a correct yes/no)."""
    return [-min(cap, per_word * max(0, len(c.split()) - max_words)) for c in completions]


def _builtins() -> dict:
    from tunelab.rewards.code import tests_pass  # the sandbox, for code problems

    return {fn.__name__: fn for fn in (exact_answer, yes_no, numeric_answer, format_regex, length_penalty,
                                       tests_pass)}


BUILTIN_REWARDS = _builtins()
