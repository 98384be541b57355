"""pass@k against hand-computed values, problem files, and `tunelab eval humaneval` end to end."""

from __future__ import annotations

import json
from fractions import Fraction
from math import comb

import pytest

from tunelab.cli import main
from tunelab.errors import TunelabError
from tunelab.eval.code_eval import pass_at_k, summarise
from tunelab.eval.code_problems import CodeProblem, load_problems, program_for

from .tiny_lm import save_tiny


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 1, 0.4),  # c / n
    (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (5, 2, 5, 1.0),  # k = n and c > 0
    (5, 0, 3, 0.0),
    (10, 1, 10, 1.0),
    (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
])
def test_pass_at_k_hand_computed(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_exact_binomials_where_they_overflow_floats() -> None:
    n, c, k = 2000, 37, 100
    exact = 1 - Fraction(comb(n - c, k), comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-9)


@pytest.mark.parametrize(("n", "c", "k"), [(0, 0, 1), (5, 6, 1), (5, 2, 6), (5, 2, 0)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_packaged_humaneval_has_164_problems_with_solutions() -> None:
    problems = load_problems("humaneval")
    assert len(problems) == 164 and len({p.task_id for p in problems}) == 164
    assert problems[0].task_id == "HumanEval/0" and problems[0].entry_point == "has_close_elements"
    assert all(p.canonical_solution for p in problems)


def test_other_schema_and_bad_rows(tmp_path) -> None:
    path = tmp_path / "problems.jsonl"
    path.write_text(json.dumps({"prompt": "def f():\n", "tests": "assert f() == 1\n", "entry_point": "f"}) + "\n")
    (problem,) = load_problems(path)
    assert problem.task_id == "1" and problem.test == "assert f() == 1\n"
    assert program_for(problem, "    return 1\n") == "def f():\n    return 1\n\nassert f() == 1\n\n"
    path.write_text(json.dumps({"prompt": "x", "test": "y"}) + "\n")
    with pytest.raises(TunelabError, match=r"problems.jsonl:1: row has no 'entry_point'"):
        load_problems(path)


def test_program_calls_check_when_the_test_defines_it() -> None:
    problem = CodeProblem("t", "def f():\n", "def check(candidate):\n    assert candidate() == 1\n", "f")
    assert program_for(problem, "    return 1\n").endswith("check(f)\n")


def test_summary_counts_kinds_and_skips_k_above_n() -> None:
    rows = [{"n": 2, "pass@1": 0.5, "samples": [{"kind": "passed"}, {"kind": "timeout"}]},
            {"n": 2, "pass@1": 0.0, "samples": [{"kind": "crash"}, {"kind": "crash"}]}]
    summary = summarise(rows, (1, 10))
    assert summary["pass_at_k"] == {"pass@1": 0.25} and summary["k_skipped"] == [10]
    assert summary["kinds"] == {"passed": 1, "syntax_error": 0, "wrong_answer": 0, "timeout": 1, "memory": 0,
                                "crash": 2}


# The tiny word-level model emits words and never a newline, so each prompt fixes the outcome whatever it
# samples: a completion inside a comment leaves f() == 1 (passes / fails its test), one inside an open
# bracket is a syntax error.
PROBLEMS = [
    {"task_id": "pass", "prompt": "def f():\n    return 1\n# ", "test": "assert f() == 1\n", "entry_point": "f"},
    {"task_id": "wrong", "prompt": "def f():\n    return 1\n# ", "test": "def check(candidate):\n"
     "    assert candidate() == 2\n", "entry_point": "f"},
    {"task_id": "syntax", "prompt": "def f():\n    return (", "test": "assert f()\n", "entry_point": "f"},
]


def test_cli_humaneval_end_to_end_on_a_tiny_model(tmp_path, capsys) -> None:
    model_dir = save_tiny(tmp_path / "tiny")
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps(row) + "\n" for row in PROBLEMS))
    out = tmp_path / "out"
    code = main(["eval", "humaneval", "--problems", str(problems), "--model", str(model_dir), "--n", "2",
                 "--temperature", "1.0", "--k", "1,2,5", "--max-new-tokens", "3", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_problems"] == 3 and summary["num_samples"] == 6
    assert summary["kinds"] == {"passed": 2, "syntax_error": 2, "wrong_answer": 2, "timeout": 0, "memory": 0,
                                "crash": 0}
    assert summary["pass_at_k"] == {"pass@1": pytest.approx(1 / 3), "pass@2": pytest.approx(1 / 3)}
    assert summary["k_skipped"] == [5] and summary["settings"]["chat"] is False
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["passed"]) for r in rows] == [("pass", 2), ("wrong", 0), ("syntax", 0)]
    assert all(len(r["samples"]) == 2 and r["samples"][0]["completion"].strip() for r in rows)
    assert "pass@1 = 0.3333" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["eval", "humaneval", "--model", "a", "--model", "b"],  # one model at a time
    ["eval", "humaneval", "--model", "a", "--n", "4"],  # several samples need sampling
    ["eval", "humaneval", "--model", "a", "--k", "1,x"],
    ["eval", "prompts.jsonl", "--model", "a", "--n", "2"],  # a code option in prompt-file mode
])
def test_cli_refuses_bad_code_options_in_one_line(argv, capsys) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("tunelab: error:")


def test_chat_replies_become_programs_that_keep_the_prompts_imports():
    from tunelab.eval.code_eval import chat_continuation, chat_request
    from tunelab.eval.code_problems import CodeProblem, program_for
    from tunelab.eval.sandbox import run_programs

    problem = CodeProblem("t/0", 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum."""\n',
                          "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n", "total")
    assert chat_request(problem).endswith(f"```python\n{problem.prompt}```")
    whole = "Sure!\n```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```\nThis sums the list."
    body = "    return sum(xs)\n"
    wrong = "```python\ndef total(xs):\n    return 0\n```"
    programs = [program_for(problem, chat_continuation(problem, reply)) for reply in (whole, body, wrong)]
    assert [r.kind for r in run_programs(programs)] == ["passed", "passed", "wrong_answer"]
