"""Equal-budget comparison: metric values read at equal training tokens/seconds from periodic evals, the
Pareto front, `tunelab compare --by` end to end on real runs, and the report's quality-vs-cost section."""

from __future__ import annotations

import json

from tests.report.fabricate import make_run
from tunelab.cli import main
from tunelab.recipes import load_recipe
from tunelab.report.equal_budget import equal_budget, pareto_front
from tunelab.report.html import render_report
from tunelab.report.runs import find_runs
from tunelab.runner import run_recipe

TINY_ARCH = "model.arch={type: gpt, n_layer: 1, n_head: 2, n_embd: 32, block_size: 16}"


def budget_run(root, label, evals, total_tokens, final, seconds=10.0):
    """A run whose periodic evals of accuracy are [(tokens, value)], finished at total_tokens."""
    folder = make_run(root, label, {"accuracy": final}, steps=1)
    lines = [{"step": i + 1, "tokens": tokens, "train_seconds": tokens / 100, "eval": {"accuracy": value}}
             for i, (tokens, value) in enumerate(evals)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = json.loads((folder / "summary.json").read_text())
    summary.update(train_tokens=total_tokens, train_seconds=seconds, steps=len(evals))
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_values_are_the_last_eval_within_each_common_budget(tmp_path):
    # fast learner: good early, plateaus; slow: worse early, better only after the budget `fast` stopped at
    budget_run(tmp_path, "fast", [(100, 0.80), (200, 0.84)], 200, 0.84)
    budget_run(tmp_path, "slow", [(60, 0.50), (150, 0.70), (200, 0.78), (400, 0.90)], 400, 0.90)
    table = equal_budget(find_runs([str(tmp_path / "*")]), "tokens", "accuracy")
    assert table.budgets == [100.0, 150.0, 200.0]  # both evaluated by 100; 200 is the most both reached
    assert table.cells["fast"] == [0.80, 0.80, 0.84]
    assert table.cells["slow"] == [0.50, 0.70, 0.78]  # the 0.90 at 400 tokens is not an equal budget
    assert table.best == ["fast", "fast", "fast"]
    assert table.pareto == {"fast", "slow"}  # cheaper-and-worse vs dearer-and-better: neither dominates


def test_pareto_front_drops_runs_that_are_dearer_and_no_better():
    costs = {"a": 10.0, "b": 20.0, "c": 5.0, "d": 20.0}
    quality = {"a": 0.9, "b": 0.85, "c": 0.6, "d": 0.95}
    assert pareto_front(costs, quality, lower_better=False) == {"a", "c", "d"}
    loss = {"a": 1.0, "b": 1.0, "c": 2.0, "d": 0.5}
    assert pareto_front(costs, loss, lower_better=True) == {"a", "c", "d"}  # b ties a's loss at twice the cost


def test_runs_predating_logged_budgets_are_estimated_and_marked(tmp_path):
    make_run(tmp_path, "old", {"accuracy": 0.7}, steps=4)  # eval lines with a step only
    budget_run(tmp_path, "new", [(10, 0.6), (40, 0.8)], 40, 0.8)
    old = json.loads((tmp_path / "old" / "summary.json").read_text())
    old.update(tokens_per_s=10.0, train_seconds=4.0)  # 40 tokens over 4 steps: 10 per step
    (tmp_path / "old" / "summary.json").write_text(json.dumps(old))
    table = equal_budget(find_runs([str(tmp_path / "*")]), "tokens", "accuracy")
    old_curve = next(c for c in table.curves if c.label == "old")
    assert old_curve.estimated and [p[0] for p in old_curve.points] == [20.0, 40.0]


def test_compare_by_tokens_on_real_runs(tmp_path, capsys, one_thread):
    text = tmp_path / "verse.txt"
    text.write_text("Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n" * 20)
    folders = {}
    for name, lr in (("slow", "1e-4"), ("quick", "1e-2")):
        folders[name] = run_recipe(load_recipe("configs/shakespeare_char_nanogpt.yaml", [
            "data.dataset=null", f"data.train={text}", TINY_ARCH, "train.batch_size=8", "train.max_steps=30",
            "train.eval_every=10", "train.warmup_ratio=0.0", "train.threads=1", "lm.eval_windows=16",
            "lm.samples=0", f"train.lr={lr}", f"output_dir={tmp_path / 'runs'}", f"name={name}"]))[0].run_dir
    lines = [json.loads(line) for line in (folders["quick"] / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if "eval" in line]
    assert [e["tokens"] for e in evals] == [10 * 8 * 16, 20 * 8 * 16, 30 * 8 * 16]  # steps x batch x window
    assert evals[0]["train_seconds"] < evals[-1]["train_seconds"]
    assert main(["compare", str(tmp_path / "runs" / "*"), "--by", "tokens"]) == 0
    out = capsys.readouterr().out
    assert "eval_loss @ 1,280 tok" in out and "eval_loss @ 3,840 tok" in out and "| quick |" in out
    quick_row = next(line for line in out.splitlines() if line.startswith("| quick |"))
    assert quick_row.count("*") == 3  # the 100x larger lr has the lower loss at every equal budget
    page = render_report(find_runs([str(tmp_path / "runs" / "*")]))
    assert "Quality vs cost" in page and "eval_loss at equal training seconds" in page


def test_compare_by_without_periodic_evals_is_one_line(tmp_path, capsys):
    make_run(tmp_path, "a", {"accuracy": 0.7}, steps=1)  # steps=1: no eval lines at all
    assert main(["compare", str(tmp_path / "a"), "--by", "seconds"]) == 2
    err = capsys.readouterr().err
    assert "no run has periodic evaluations of accuracy" in err and err.strip().count("\n") == 0
