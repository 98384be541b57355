"""Rebuild the vendored Python problems with solutions (tunelab/data/vendored/python_challenges.jsonl.gz) from
BIG-bench's python_programming_challenge task in the bigbench==1.0.0 source distribution (Apache-2.0).

    curl -sO https://files.pythonhosted.org/packages/95/f8/c019b3579df548a04cac12342cfcb878e50ddf6cfcd7fddba8cfc721c157/bigbench-1.0.0.tar.gz
    python tools/vendor_python_challenges.py bigbench-1.0.0.tar.gz

The task defines 32 challenges: a description, a function signature and a generator of (arguments,
expected result) cases; 17 generators hold a reference `implementation`, and the task's test_solutions.py
(adapted from Donne Martin's interactive-coding-challenges, Apache-2.0) solves three more.
For the others a short solution written for tunelab (`OWN_SOLUTIONS`) is used
where the expected results are unambiguous; the three whose expected results contradict their description
(FizzBuzz's indented lines, "make the integer"'s ordering, binary strings given as octal integers) and the
next-palindrome case list (808 -> 818 but 111 -> 111) are left out. Every kept solution is run against its
cases in tunelab's sandbox before it is written, so a row never ships a solution that fails its own tests.

Each row has HumanEval's schema, so the file serves `tunelab eval humaneval --problems` too:
task_id, prompt (signature + docstring with the first case as an example), canonical_solution (the body),
test (`check(candidate)` asserting every case with ==, as BIG-bench compares), entry_point; plus
name, difficulty, solution_source, and request / response: the chat-mode request of tunelab's code
evaluation and a reply holding the whole function in a python block (what code SFT trains on).
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib
import inspect
import io
import json
import re
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

TASK = "bigbench-1.0.0/bigbench/benchmark_tasks/python_programming_challenge/"
OUT = Path("tunelab/data/vendored/python_challenges.jsonl.gz")
DROPPED = {"fizzbuzz", "make_n", "countStrings", "next_palindrome"}
RESTRICTION = " We do not use augmented assignment operations (+=, *=, etc.) for clarity."

OWN_SOLUTIONS = {
    "min_edit_distance": """
        previous = list(range(len(str2) + 1))
        for i, a in enumerate(str1, 1):
            current = [i]
            for j, b in enumerate(str2, 1):
                current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
            previous = current
        return previous[-1]
    """,
    "alphabetize": "return sorted(string_list)",
    "remove_non_num": 'return "".join(c for c in str1 if c.isdigit())',
    "interlace_strings": """
        out = []
        for i in range(max(len(str1), len(str2))):
            out.append(str1[i:i + 1] + str2[i:i + 1])
        return "".join(out)
    """,
    "phi_to_n": """
        from decimal import Decimal, getcontext
        getcontext().prec = n + 10
        phi = (1 + Decimal(5).sqrt()) / 2
        return str(phi)[:n + 2]
    """,
    "LCS": """
        best = ""
        for i in range(len(str1)):
            for j in range(i + len(best) + 1, len(str1) + 1):
                if str1[i:j] in str2:
                    best = str1[i:j]
        return best
    """,
    "check_power": """
        if n < 1:
            return False
        digits = sorted(str(n))
        power = 1
        while len(str(power)) <= len(digits):
            if sorted(str(power)) == digits:
                return True
            power = power * 2
        return False
    """,
    "LCM": """
        a, b = n1, n2
        while b:
            a, b = b, a % b
        return n1 * n2 // a
    """,
}


def extract(sdist: Path, into: Path) -> None:
    with tarfile.open(sdist, "r:gz") as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(TASK) and m.name.endswith(".py")]
        archive.extractall(into, members=members, filter="data")


def implementation_body(generator) -> str | None:
    """The generator's inner `implementation` as a body, with the assignments it reads from the
    generator's scope (e.g. a lookup table) moved inside it."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(generator)))
    outer = tree.body[0]
    inner = next((s for s in outer.body if isinstance(s, ast.FunctionDef) and s.name == "implementation"), None)
    if inner is None:
        return None
    free = {n.id for n in ast.walk(inner) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    setup = [s for s in outer.body if isinstance(s, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id in free for t in s.targets)]
    params = [a.arg for a in inner.args.args]
    body = "\n".join(ast.unparse(s) for s in [*setup, *inner.body])
    return params, body


def as_function(name: str, params: list[str], body: str) -> str:
    return f"def {name}({', '.join(params)}):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"


def solution(challenge, test_solutions) -> tuple[str, str] | None:
    """(whole function source named as the challenge's function, where it came from)."""
    params = [p.strip() for p in challenge.param_string.split(",")]
    found = implementation_body(challenge.test_generator)
    if found is not None:
        inner_params, body = found
        rename = "".join(f"{a} = {b}\n" for a, b in zip(inner_params, params, strict=True) if a != b)
        return as_function(challenge.func_name, params, rename + body), "BIG-bench implementation"
    reference = getattr(test_solutions, challenge.func_name, None)
    if reference is not None:
        function = ast.parse(textwrap.dedent(inspect.getsource(reference))).body[0]
        if "defaultdict" in ast.unparse(function):  # imported at the top of test_solutions.py
            function.body.insert(0, ast.parse("from collections import defaultdict").body[0])
        return ast.unparse(function) + "\n", "BIG-bench test_solutions.py (after Donne Martin's coding challenges)"
    if challenge.func_name in OWN_SOLUTIONS:
        return as_function(challenge.func_name, params, OWN_SOLUTIONS[challenge.func_name]), "written for tunelab"
    return None


def cases(challenge) -> list[tuple[tuple, object]]:
    single = len(challenge.param_string.split(",")) == 1
    return [((args,) if single else tuple(args), expected) for args, expected in challenge.test_generator()]


def docstring(challenge, example: tuple[tuple, object]) -> str:
    lines = [line.removeprefix("# ") for line in challenge.prompt.splitlines() if line.startswith("#")]
    text = " ".join(lines).replace(RESTRICTION, "")
    text = text.replace("In this coding exercise, we write a python function which ", "Write a function which ")
    # a few challenges give arg_types as a string, not a tuple, so BIG-bench spells one letter as the type
    text = re.sub(r" The function '\w+' will take [^.]*'\w+', an? \w\.", "", text)
    args, expected = example
    call = f"{challenge.func_name}({', '.join(map(repr, args))})"
    wrapped = textwrap.fill(text, 100, initial_indent="    ", subsequent_indent="    ")
    return f'    """\n{wrapped}\n    >>> {call}\n    {expected!r}\n    """\n'


def row(index: int, challenge, function: str, source: str, checks: list[tuple[tuple, object]]) -> dict:
    from tunelab.eval.code_eval import chat_request
    from tunelab.eval.code_problems import CodeProblem

    signature = function.splitlines()[0]
    prompt = signature + "\n" + docstring(challenge, checks[0])
    body = function.split("\n", 1)[1]
    test = "def check(candidate):\n" + "".join(
        f"    assert candidate({', '.join(map(repr, args))}) == {expected!r}\n" for args, expected in checks)
    problem = CodeProblem(task_id=f"PythonChallenge/{index}", prompt=prompt, test=test,
                          entry_point=challenge.func_name)
    return {"task_id": problem.task_id, "name": challenge.name, "difficulty": str(challenge.difficulty.value),
            "prompt": prompt, "canonical_solution": body, "test": test, "entry_point": challenge.func_name,
            "solution_source": source, "request": chat_request(problem),
            "response": f"```python\n{function}```"}


def build(sdist: Path) -> list[dict]:
    from tunelab.eval.code_problems import CodeProblem, program_for
    from tunelab.eval.sandbox import run_programs

    with tempfile.TemporaryDirectory() as folder:
        extract(sdist, Path(folder))
        sys.path.insert(0, str(Path(folder) / "bigbench-1.0.0"))
        package = "bigbench.benchmark_tasks.python_programming_challenge"
        challenges = importlib.import_module(f"{package}.challenge").get_challenges()
        test_solutions = importlib.import_module(f"{package}.test_solutions")
        candidates = []
        for challenge in challenges:
            found = None if challenge.func_name in DROPPED else solution(challenge, test_solutions)
            if found is None:
                print(f"left out: {challenge.name} ({challenge.func_name})")
                continue
            candidates.append(row(len(candidates), challenge, *found, cases(challenge)))
    problems = [CodeProblem(task_id=r["task_id"], prompt=r["prompt"], test=r["test"], entry_point=r["entry_point"])
                for r in candidates]
    programs = [program_for(p, r["canonical_solution"]) for p, r in zip(problems, candidates, strict=True)]
    verdicts = run_programs(programs)
    failed = [(r["name"], v.kind, v.message) for r, v in zip(candidates, verdicts, strict=True) if v.kind != "passed"]
    if failed:
        raise SystemExit(f"solutions failing their own cases: {failed}")
    return candidates


def main(sdist: str) -> None:
    rows = build(Path(sdist))
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        handle.write(lines.encode())
    OUT.write_bytes(buffer.getvalue())
    print(OUT, len(rows), "problems", hashlib.sha256(buffer.getvalue()).hexdigest())


if __name__ == "__main__":
    main(sys.argv[1])
