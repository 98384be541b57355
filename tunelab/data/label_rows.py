"""Row checks for classification tables: what a new user's CSV gets wrong, found before training.

A row is bad when its text is empty (`empty_text`), its label is missing or empty (`missing_label`:
otherwise "" would silently become a class of its own), an eval label never occurs in training
(`unknown_eval_label`), or it repeats an earlier (text, label) row of the same split (`duplicate_row`).
Bad rows are dropped and counted (or fatal with `data.on_error: fail`, see `tunelab.data.bad_rows`).
A label column left as strings only because of empty cells ("0", "1", "") becomes integers again.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tunelab.data.bad_rows import BadRows
from tunelab.data.tables import ROW, join_text


def is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == ""


def clean_split(frame: pd.DataFrame, text_fields: tuple[str, ...], label: str,
                known: set[str] | None = None) -> tuple[pd.DataFrame, BadRows]:
    """The split without its bad rows, and their counts; `known` = the training labels (eval split only)."""
    bad = BadRows()
    texts = join_text(frame, text_fields)
    rows = frame[ROW].to_numpy() if ROW in frame.columns else np.arange(len(frame))
    keep = np.ones(len(frame), dtype=bool)
    seen: set[tuple[str, str]] = set()
    for i, (text, value) in enumerate(zip(texts, frame[label].tolist(), strict=True)):
        reason = None
        if not text.strip():
            reason = "empty_text"
        elif is_missing(value):
            reason = "missing_label"
        elif known is not None and str(value) not in known:
            reason = "unknown_eval_label"
        elif (text, str(value)) in seen:
            reason = "duplicate_row"
        if reason is not None:
            bad.add(reason, int(rows[i]))
            keep[i] = False
        else:
            seen.add((text, str(value)))
    clean = frame.loc[keep].reset_index(drop=True)
    return clean.assign(**{label: integer_if_digits(clean[label])}), bad


def integer_if_digits(values: pd.Series) -> pd.Series:
    """Integers again when every value is a whole number written as text (empty cells made them strings)."""
    if pd.api.types.is_integer_dtype(values) or values.empty:
        return values
    text = values.astype(str).str.strip()
    if text.str.fullmatch(r"-?\d+").all():
        return text.astype(np.int64)
    return values
