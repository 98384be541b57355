"""Rebuild the vendored BIG-bench causal_judgment set (tunelab/data/vendored/causal_judgment.jsonl.gz) from
the BIG-bench 1.0.0 source distribution (bigbench/benchmark_tasks/causal_judgment/task.json, 190
examples; BIG-Bench Hard keeps 187 of them).

    pip download --no-deps bigbench==1.0.0 -d /tmp/bb      (or fetch the sdist from PyPI's files host)
    python tools/vendor_bbh.py /tmp/bb/bigbench-1.0.0.tar.gz

Each row: id (position in task.json), prompt (BIG-bench's task prefix, the story and question, then the
two options as BIG-Bench Hard writes them), answer ("Yes" or "No": the target with score 1), and the
Wikipedia link comment where the task has one. The train/eval split is made by the dataset registry.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

MEMBER = "bigbench-1.0.0/bigbench/benchmark_tasks/causal_judgment/task.json"
OUT = Path("tunelab/data/vendored/causal_judgment.jsonl.gz")


def rows(sdist: Path) -> list[dict]:
    with tarfile.open(sdist, "r:gz") as archive:
        task = json.load(archive.extractfile(MEMBER))
    prefix = task["task_prefix"].strip()
    out = []
    for index, example in enumerate(task["examples"]):
        answer = next(name for name, score in example["target_scores"].items() if score == 1)
        prompt = f"{prefix}\n{example['input'].strip()}\nOptions:\n- Yes\n- No"
        out.append({"id": f"cj{index:03d}", "prompt": prompt, "answer": answer,
                    "comment": example.get("comment", "")})
    return out


def main(sdist: str) -> None:
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows(Path(sdist)))
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        handle.write(lines.encode())
    OUT.write_bytes(buffer.getvalue())
    print(OUT, len(lines.splitlines()), "rows", hashlib.sha256(buffer.getvalue()).hexdigest())


if __name__ == "__main__":
    main(sys.argv[1])
