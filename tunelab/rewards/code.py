"""The "tests pass" reward: run each completion's code against its row's tests in the sandbox.

For a row with `test` (a HumanEval-style test: a `check(candidate)` function or plain asserts) and
`entry_point` (the function's name), the completion's code is the first ```python fenced block of the
reply, or the whole reply when it has none. When that code does not define the entry point itself it is
taken as the continuation of the prompt (the function's signature and docstring). The program
    code + test + check(entry_point)
runs in `tunelab.eval.sandbox` (own process, time/memory/file limits, no network where the OS allows);
reward 1 when it passes, 0 on any failure (syntax error, wrong answer, timeout, memory, crash). Like any
verdict read from code the model wrote, it can be forged by code written to do so (docs/code_eval.md).
"""

from __future__ import annotations

import math
import re
from typing import Any

FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def extract_code(reply: str) -> str:
    """The first fenced code block of a chat reply, else the reply itself."""
    match = FENCE.search(reply)
    return match.group(1) if match else reply


def defines(code: str, name: str) -> bool:
    """Whether `code` holds a top-level-or-nested `def name(`."""
    return re.search(rf"^\s*def\s+{re.escape(str(name))}\s*\(", code, re.MULTILINE) is not None


def tests_pass(prompts: list[str], completions: list[str], test: list[str], entry_point: list[str],
               wall_s: float = 5.0, memory_mb: int = 1024, **_: Any) -> list[float]:
    """1.0 per completion whose code passes its row's tests in the sandbox, else 0.0."""
    from tunelab.eval.code_problems import CodeProblem, program_for
    from tunelab.eval.sandbox import SandboxLimits, run_programs

    programs = []
    for prompt, completion, tests, entry in zip(prompts, completions, test, entry_point, strict=True):
        code = extract_code(completion)
        if not defines(code, entry):
            code = prompt + code
        programs.append(program_for(CodeProblem("", "", str(tests), str(entry)), code))
    limits = SandboxLimits(wall_s=wall_s, cpu_s=max(1, math.ceil(wall_s)), memory_bytes=memory_mb << 20)
    return [1.0 if result.kind == "passed" else 0.0 for result in run_programs(programs, limits)]
