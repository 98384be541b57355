"""Stable ids for base weights, so a run or adapter can record exactly which weights it sat on.

A fingerprint is the sha256 of config.json plus the full sha256 of every top-level weight file.
Hashing a 90 MB safetensors file costs a fraction of a second, so the per-file digests are
memoised in a small JSON keyed by (path, size, mtime): the first resolve hashes, later ones only
stat. The mtime is part of the memo key, never of the fingerprint, so the same bytes installed
twice give the same id.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tunelab.rundir import atomic_write_json

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
CHUNK = 4 << 20


def file_sha256(path: Path) -> str:
    """Full sha256 of one file, read in 4 MiB chunks so memory stays flat on large weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def weight_files(model_dir: Path) -> list[Path]:
    """Top-level weight files only: sub-folders of packaged models hold pooling configs, not weights."""
    return sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def dir_fingerprint(model_dir: Path, memo_path: Path | None = None) -> str:
    """16 hex chars identifying config.json + weights of `model_dir`; `memo_path` caches file hashes."""
    memo = _read_memo(memo_path)
    digest = hashlib.sha256()
    config = model_dir / "config.json"
    digest.update(config.read_bytes() if config.is_file() else b"<no config.json>")
    changed = False
    for path in weight_files(model_dir):
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in memo:
            memo[key] = file_sha256(path)
            changed = True
        digest.update(f"\n{path.name}:{memo[key]}".encode())
    if changed and memo_path is not None:
        _write_memo(memo_path, memo)
    return digest.hexdigest()[:16]


def _read_memo(memo_path: Path | None) -> dict[str, str]:
    if memo_path is None or not memo_path.is_file():
        return {}
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a corrupt memo only costs a re-hash
    return memo if isinstance(memo, dict) else {}


def _write_memo(memo_path: Path, memo: dict[str, str]) -> None:
    try:
        atomic_write_json(memo_path, memo)
    except OSError:
        pass  # read-only cache dir: fingerprints still work, just re-hash next time
