"""Code-generation problems: reading a problem file, and turning a completion into a test program.

A problem file is JSONL (optionally gzipped), one object per line, in HumanEval's schema
    {"task_id": "HumanEval/0", "prompt": "def f(x):\\n    ...", "test": "def check(candidate): ...",
     "entry_point": "f"}
or with `tests` instead of `test` (and then `task_id` optional: the row number). `canonical_solution`
is kept when present (tests run the reference solutions through the sandbox). The name `humaneval`
picks the vendored 164 OpenAI HumanEval problems (data/vendored/humaneval.jsonl.gz, see PROVENANCE.md).

The program for a completion is HumanEval's: prompt + completion + "\\n" + test + "\\n" +
"check(<entry_point>)", the last line only when the test text defines `check` (a test that is a bare
list of asserts runs as it is).
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.data.json_rows import json_row
from tunelab.errors import TunelabError

HUMANEVAL = Path(__file__).resolve().parent.parent / "data" / "vendored" / "humaneval.jsonl.gz"
HUMANEVAL_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")
CHECK_RE = re.compile(r"^def check\(", re.MULTILINE)


@dataclass(frozen=True)
class CodeProblem:
    task_id: str
    prompt: str
    test: str
    entry_point: str
    canonical_solution: str | None = None


def problem_file_path(name: Path | str) -> Path:
    return HUMANEVAL if str(name) == "humaneval" else Path(name)


def load_problems(name: Path | str, limit: int | None = None) -> list[CodeProblem]:
    """Problems from a JSONL(.gz) file or `humaneval`; a bad row stops with one line naming file and line."""
    path = problem_file_path(name)
    if not path.is_file():
        raise TunelabError(f"problem file not found: {path} (or give 'humaneval' for the packaged set)")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TunelabError(f"{path}: cannot read as UTF-8 JSONL ({error})") from error
    problems: list[CodeProblem] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            problems.append(_problem(json_row(path, number, line), f"{path}:{number}", len(problems) + 1))
    if not problems:
        raise TunelabError(f"{path}: no problems (expected JSONL rows with prompt, test and entry_point)")
    ids = [p.task_id for p in problems]
    if len(set(ids)) != len(ids):
        raise TunelabError(f"{path}: task_id {next(i for i in ids if ids.count(i) > 1)!r} appears more than once")
    return problems[:limit] if limit else problems


def _problem(row: dict[str, Any], where: str, index: int) -> CodeProblem:
    test = row.get("test", row.get("tests"))
    fields = {"prompt": row.get("prompt"), "test (or tests)": test, "entry_point": row.get("entry_point")}
    for key, value in fields.items():
        if not isinstance(value, str) or not value.strip():
            raise TunelabError(f"{where}: row has no '{key}' (a non-empty string is required)")
    entry_point = str(row["entry_point"]).strip()
    if not entry_point.isidentifier():
        raise TunelabError(f"{where}: entry_point {entry_point!r} is not a Python name")
    solution = row.get("canonical_solution")
    return CodeProblem(str(row.get("task_id", index)), str(row["prompt"]), str(test), entry_point,
                       solution if isinstance(solution, str) else None)


def program_for(problem: CodeProblem, completion: str) -> str:
    """The program that passes iff `completion` (continuing the prompt) satisfies the problem's tests."""
    program = problem.prompt + completion + "\n" + problem.test + "\n"
    if CHECK_RE.search(problem.test):
        program += f"check({problem.entry_point})\n"
    return program
