"""Tokenise once, reuse forever: token ids cached on disk keyed by tokenizer, texts and max length.

Stored as .npz (flat int32 ids + offsets) and read with allow_pickle=False, so a cache file can
never execute code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from tunelab.progress import progress_bar
from tunelab.rundir import atomic_write_with

CHUNK = 512


def cache_key(tokenizer_id: str, texts: list[str], max_length: int, extra: str = "") -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([tokenizer_id, max_length, extra]).encode())
    for text in texts:
        digest.update(text.encode("utf-8", "replace"))
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def tokenize_texts(tokenizer, texts: list[str], max_length: int, cache_dir: Path | None,
                   tokenizer_id: str, description: str = "tokenising", text_pairs: list[str] | None = None,
                   ) -> list[np.ndarray]:
    """Token ids per text (truncated to max_length, special tokens added), from cache when possible."""
    extra = "pairs" if text_pairs is not None else ""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{cache_key(tokenizer_id, texts + (text_pairs or []), max_length, extra)}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as stored:
                flat, offsets = stored["ids"], stored["offsets"]
            return [flat[offsets[i]:offsets[i + 1]].astype(np.int64) for i in range(len(offsets) - 1)]
    ids: list[np.ndarray] = []
    with progress_bar(description, total=len(texts)) as bar:
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start:start + CHUNK]
            pairs = text_pairs[start:start + CHUNK] if text_pairs is not None else None
            encoded = tokenizer(chunk, pairs, truncation=True, max_length=max_length)["input_ids"]
            ids.extend(np.asarray(x, dtype=np.int64) for x in encoded)
            bar.advance(len(chunk))
    if path is not None:
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.concatenate(ids).astype(np.int32) if ids else np.zeros(0, np.int32)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, ids=flat, offsets=offsets)

        atomic_write_with(path, write)
    return ids
