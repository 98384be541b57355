"""Tokenise once, reuse forever: token ids cached on disk keyed by tokenizer, texts and max length.

The tokenizer part of the key is `tokenizer_fingerprint`: its vocabulary and merges (the fast
tokenizer's JSON), special tokens and chat template, so editing any tokenizer file or the template in
a model folder gives a new key instead of stale ids.

Stored as .npz (flat int32 ids + offsets) and read with allow_pickle=False, so a cache file can
never execute code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.progress import progress_bar
from tunelab.rundir import atomic_write_with

CHUNK = 512


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """16 hex chars identifying what a tokenizer turns text into (not where it was loaded from)."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    template = getattr(tokenizer, "chat_template", None)
    digest.update(json.dumps([template, getattr(tokenizer, "special_tokens_map", {}),
                              getattr(tokenizer, "padding_side", None),
                              getattr(tokenizer, "truncation_side", None)], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def templated_extra(tokenizer: Any, version: str) -> str:
    """The `extra` part of a cache key for ids rendered through the chat template: the template text itself
    goes in, so an edited template never reuses ids even if a caller's tokenizer id is stale."""
    return version + json.dumps(getattr(tokenizer, "chat_template", None))


def cache_key(tokenizer_id: str, texts: list[str], max_length: int, extra: str = "") -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([tokenizer_id, max_length, extra]).encode())
    for text in texts:
        digest.update(text.encode("utf-8", "replace"))
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def save_ragged(path: Path, extra: dict[str, np.ndarray] | None = None, **columns: list[np.ndarray]) -> None:
    """Several lists of variable-length int arrays (same lengths per row) as one .npz, atomically, plus
    `extra` plain arrays stored beside them (read back by `load_array`)."""
    first = next(iter(columns.values()))
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in first])]).astype(np.int64)
    flat = {name: (np.concatenate(rows) if rows else np.zeros(0)).astype(np.int32) for name, rows in columns.items()}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, offsets=offsets, **flat, **(extra or {}))

    atomic_write_with(path, write)


def load_ragged(path: Path, *names: str) -> list[list[np.ndarray]] | None:
    """The lists saved by `save_ragged`, or None when there is no cache file."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as stored:
        offsets = stored["offsets"]
        columns = [stored[name] for name in names]
    spans = list(zip(offsets[:-1], offsets[1:], strict=True))
    return [[flat[a:b].astype(np.int64) for a, b in spans] for flat in columns]


def load_array(path: Path, name: str) -> np.ndarray:
    """One `extra` array of a `save_ragged` file."""
    with np.load(path, allow_pickle=False) as stored:
        return stored[name]


def tokenize_texts(tokenizer, texts: list[str], max_length: int, cache_dir: Path | None,
                   tokenizer_id: str, description: str = "tokenising", text_pairs: list[str] | None = None,
                   ) -> list[np.ndarray]:
    """Token ids per text (truncated to max_length, special tokens added), from cache when possible."""
    extra = "pairs" if text_pairs is not None else ""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{cache_key(tokenizer_id, texts + (text_pairs or []), max_length, extra)}.npz"
        cached = load_ragged(path, "ids")
        if cached is not None:
            return cached[0]
    ids: list[np.ndarray] = []
    with progress_bar(description, total=len(texts)) as bar:
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start:start + CHUNK]
            pairs = text_pairs[start:start + CHUNK] if text_pairs is not None else None
            encoded = tokenizer(chunk, pairs, truncation=True, max_length=max_length)["input_ids"]
            ids.extend(np.asarray(x, dtype=np.int64) for x in encoded)
            bar.advance(len(chunk))
    if path is not None:
        save_ragged(path, ids=ids)
    return ids
