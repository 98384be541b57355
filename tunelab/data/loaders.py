"""Read user data files into pandas tables: CSV/TSV, JSONL/JSON, Parquet, plain text (gzip too).

Errors name the file (and the row where a row is at fault) in one line.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tunelab.errors import TunelabError

TEXT_SUFFIXES = (".txt", ".txt.gz")
TABLE_FORMATS = {
    ".csv": "csv", ".csv.gz": "csv", ".tsv": "tsv", ".tsv.gz": "tsv",
    ".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".json": "json", ".json.gz": "json",
    ".parquet": "parquet", ".txt": "text", ".txt.gz": "text",
}


def file_format(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(TABLE_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return TABLE_FORMATS[suffix]
    known = ", ".join(sorted({s for s in TABLE_FORMATS if not s.endswith(".gz")}))
    raise TunelabError(f"{path}: unknown data format (use one of {known}, optionally .gz)")


def read_table(path: str | Path, key: str = "data.train") -> pd.DataFrame:
    """Read any supported file; `key` names the recipe key in error messages."""
    path = Path(path)
    if not path.is_file():
        raise TunelabError(f"{key}: file not found: {path}")
    kind = file_format(path)
    try:
        if kind == "csv":
            return pd.read_csv(path, keep_default_na=False)
        if kind == "tsv":
            return pd.read_csv(path, sep="\t", keep_default_na=False)
        if kind == "jsonl":
            return pd.read_json(path, lines=True)
        if kind == "json":
            return pd.read_json(path)
        if kind == "parquet":
            return pd.read_parquet(path)
        return read_text_lines(path)
    except TunelabError:
        raise
    except (ValueError, UnicodeDecodeError, OSError, ImportError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TunelabError(f"{key}: cannot read {path} as {kind}: {first_line}") from None


def read_text_lines(path: Path) -> pd.DataFrame:
    """A plain text file becomes one row per non-empty line in a `text` column."""
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle]
    return pd.DataFrame({"text": [line for line in lines if line.strip()]})


def read_text(path: str | Path, key: str = "data.train") -> str:
    """Whole file as one string (char-level LM corpora)."""
    import gzip

    path = Path(path)
    if not path.is_file():
        raise TunelabError(f"{key}: file not found: {path}")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return handle.read()


def require_columns(frame: pd.DataFrame, columns: list[str], source: str, key: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TunelabError(
            f"{key}: column '{missing[0]}' not in {source} (columns: {', '.join(map(str, frame.columns))})")
