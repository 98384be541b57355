"""One JSONL line as a JSON object, or one line naming the file and line number of what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError


def json_row(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise TunelabError(f"{path}:{number}: not valid JSON ({error.msg})") from error
    if not isinstance(row, dict):
        raise TunelabError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    return row
