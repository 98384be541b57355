"""Rebuild tunelab/data/vendored/ from ../shared/data: small, seeded slices plus PROVENANCE.md.

Run from the repository root: `python tools/vendor_data.py [SHARED_DATA_DIR]`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
from pathlib import Path

import pandas as pd

OUT = Path("tunelab/data/vendored")

# (output name, source file, rows kept or None for all, how the slice was taken, licence)
SLICES = [
    ("ag_news_test.csv.gz", "ag_news/test.csv.gz", None, "full official test split (7,600)",
     "AG corpus: research/non-commercial use (see shared SOURCES.md)"),
    ("cola_train.csv.gz", "cola/in_domain_train.csv.gz", None, "full in_domain_train",
     "CoLA: cite Warstadt et al. 2018"),
    ("cola_dev.csv.gz", "cola/in_domain_dev.csv.gz", None, "full in_domain_dev", "CoLA: cite Warstadt et al. 2018"),
    ("sst2_train.csv.gz", "sst2/train.csv.gz", 4000, "random 4,000 rows, seed 0", "SST/GLUE: cite Socher et al. 2013"),
    ("sst2_dev.csv.gz", "sst2/dev.csv.gz", None, "full dev (872)", "SST/GLUE: cite Socher et al. 2013"),
    ("imdb_train.csv.gz", "imdb/train.csv.gz", 1000, "random 1,000 rows, seed 0", "aclImdb: cite Maas et al. 2011"),
    ("imdb_test.csv.gz", "imdb/test.csv.gz", 500, "random 500 rows, seed 0", "aclImdb: cite Maas et al. 2011"),
    ("gsm8k_train.jsonl.gz", "gsm8k/train.jsonl.gz", 600, "random 600 rows, seed 0", "MIT"),
    ("gsm8k_test.jsonl.gz", "gsm8k/test.jsonl.gz", 100, "random 100 rows, seed 0", "MIT"),
    ("spa_eng_pairs.jsonl.gz", "spa_eng/pairs.jsonl.gz", 3000, "random 3,000 rows, seed 0", "CC-BY 2.0 (Tatoeba)"),
    ("hh_helpful_base.jsonl.gz", "hh_rlhf/helpful_base_test.jsonl.gz", 400,
     "random 400 rows with non-null prompt, seed 0", "MIT"),
    ("tinyshakespeare.txt.gz", "tinyshakespeare/input.txt.gz", None, "full text", "public domain"),
]


def read(source: Path) -> pd.DataFrame | str:
    if source.name.endswith(".txt.gz"):
        return gzip.open(source, "rt", encoding="utf-8").read()
    if ".jsonl" in source.name:
        return pd.read_json(source, lines=True)
    return pd.read_csv(source, keep_default_na=False)


def encode(frame: pd.DataFrame | str, name: str) -> bytes:
    if isinstance(frame, str):
        payload = frame.encode("utf-8")
    elif ".jsonl" in name:
        payload = frame.to_json(orient="records", lines=True, force_ascii=False).encode("utf-8")
    else:
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        payload = buffer.getvalue().encode("utf-8")
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as handle:
        handle.write(payload)
    return out.getvalue()


def main(shared: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rows = ["| file | source (shared/data) | rows | slice | licence | sha256 |", "|---|---|---|---|---|---|"]
    for name, rel, keep, how, licence in SLICES:
        frame = read(shared / rel)
        if isinstance(frame, pd.DataFrame):
            if "prompt" in frame.columns:
                frame = frame[frame["prompt"].notna()]
            if keep is not None:
                frame = frame.sample(n=keep, random_state=0).sort_index()
            count = len(frame)
        else:
            count = frame.count("\n")
        data = encode(frame, name)
        (OUT / name).write_bytes(data)
        rows.append(f"| {name} | {rel} | {count} | {how} | {licence} | {hashlib.sha256(data).hexdigest()} |")
    text = "# Vendored data slices\n\nSmall slices of ../shared/data (see its SOURCES.md for upstream repos, " \
        "commits and licences) so that `make demo` and `make test` run offline on a machine without it. " \
        "Rebuild with `python tools/vendor_data.py`.\n\n" + "\n".join(rows) + "\n"
    (OUT / "PROVENANCE.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data"))
