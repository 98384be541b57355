"""Code SFT: the vendored problems' solutions pass their tests as the SFT replies the evaluator reads; an SFT
run with eval.code scores base and tuned through real generation and the sandbox; bad settings are one line."""

import gzip
import json

import pytest

from tunelab.errors import TunelabError
from tunelab.eval.code_eval import chat_continuation, chat_request
from tunelab.eval.code_problems import load_problems, program_for
from tunelab.eval.sandbox import run_programs
from tunelab.recipes import load_recipe, validate
from tunelab.report.html import render_report
from tunelab.report.runs import records_from_outcomes
from tunelab.runner import run_recipe

from .tiny_chat import save_chat_model, write_toy_sft

VENDORED = "tunelab/data/vendored/python_challenges.jsonl.gz"


def test_vendored_replies_pass_their_tests_through_the_chat_evaluator():
    """What code SFT trains on (the reply) is exactly what chat-mode evaluation accepts as a solution."""
    with gzip.open(VENDORED, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    problems = load_problems(VENDORED)
    assert len(problems) == len(rows) == 28
    programs = [program_for(p, chat_continuation(p, row["response"])) for p, row in zip(problems, rows, strict=True)]
    verdicts = run_programs(programs)
    assert [v.kind for v in verdicts] == ["passed"] * 28
    assert all(row["request"] == chat_request(p) for p, row in zip(problems, rows, strict=True))
    broken = program_for(problems[0], chat_continuation(problems[0], "```python\ndef binary_add(a, b):\n"
                                                                      "    return 0\n```"))
    assert run_programs([broken])[0].kind == "wrong_answer"  # the tests do test


def write_problems(path):
    """Two problems whose verdict does not depend on what a random model writes: the reply lands inside a
    string literal that the test closes, so A always passes and B always fails its assert."""
    rows = [{"task_id": "A", "prompt": 'def f():\n    return 1\n"""\n', "entry_point": "f",
             "test": '"""\ndef check(candidate):\n    assert candidate() == 1\n'},
            {"task_id": "B", "prompt": 'def g():\n    return 1\n"""\n', "entry_point": "g",
             "test": '"""\ndef check(candidate):\n    assert candidate() == 2\n'}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sft_run_scores_base_and_tuned_and_the_report_shows_them(tmp_path, one_thread):
    model_dir = save_chat_model(tmp_path / "model")
    data = write_toy_sft(tmp_path / "toy.jsonl", repeats=2)
    config = validate({
        "name": "toy_code", "task": "sft", "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir), "max_length": 32}, "data": {"train": str(data), "eval": str(data)},
        "adapter": {"variant": "lora", "rank": 4, "targets": ["q_proj", "v_proj"]},
        "train": {"max_steps": 2, "batch_size": 4, "precision": "fp32"},
        "eval": {"code": str(write_problems(tmp_path / "problems.jsonl")), "max_new_tokens": 8},
    })
    outcome = run_recipe(config)[0]
    metrics = outcome.summary["metrics"]
    assert metrics["pass@1"] == metrics["base_pass@1"] == 0.5 and metrics["pass@1_change"] == 0.0
    for label in ("base", "tuned"):
        folder = outcome.run_dir / "code_eval" / label
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["chat"] and summary["kinds"]["passed"] == 1 and summary["kinds"]["wrong_answer"] == 1
        assert len((folder / "results.jsonl").read_text().splitlines()) == 2
    page = render_report(records_from_outcomes([outcome]))
    assert "id='code-eval'" in page and page.count("<td>0.500</td>") == 2


def test_missing_problem_file_fails_before_training(tmp_path):
    config = load_recipe("configs/code_sft.yaml", [f"eval.code={tmp_path / 'nope.jsonl'}",
                                                  f"output_dir={tmp_path}"])
    with pytest.raises(TunelabError, match=r"^eval.code: problem file not found"):
        run_recipe(config)
    assert not any(tmp_path.rglob("metrics.jsonl"))


def test_code_eval_is_refused_outside_sft():
    with pytest.raises(TunelabError, match="eval.code: only task sft"):
        load_recipe("configs/demo.yaml", ["eval.code=humaneval"])
