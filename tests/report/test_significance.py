"""Significance in comparisons: the tests against hand-worked and synthetic cases, and `tunelab compare` on
hand-written run folders whose predictions files make one run clearly better, or not."""

import argparse
import csv
import io
import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef

from tunelab.eval.classification_metrics import classification_metrics
from tunelab.report.compare import build_comparison, csv_text, markdown_table
from tunelab.report.html import render_report
from tunelab.report.per_example import classification_statistics, read_example_scores, scores_for_metric
from tunelab.report.runs import find_runs
from tunelab.report.significance import (
    accuracy_difference,
    mcnemar_exact,
    mean_statistic,
    paired_bootstrap,
    seed_interval,
    welch_difference,
)
from tunelab.trials.commands import add_parsers

from .fabricate import make_run


def correctness(b: int, c: int, both: int = 20, neither: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Right/wrong vectors with b examples only A gets right and c only B gets right."""
    a = np.array([1] * both + [1] * b + [0] * c + [0] * neither, dtype=bool)
    other = np.array([1] * both + [0] * b + [1] * c + [0] * neither, dtype=bool)
    return a, other


def test_mcnemar_exact_matches_the_hand_worked_binomial():
    # b = 10, c = 2: p = 2 · P(X ≤ 2), X ~ Bin(12, 1/2) = 2 · (1 + 12 + 66) / 4096 = 0.0386
    p, b, c = mcnemar_exact(*correctness(10, 2))
    assert (b, c) == (10, 2) and p == pytest.approx(2 * 79 / 4096) and round(p, 4) == 0.0386
    assert mcnemar_exact(*correctness(5, 5))[0] == 1.0  # balanced discordance: no evidence
    assert mcnemar_exact(*correctness(0, 0))[0] == 1.0  # no discordant pair at all
    difference = accuracy_difference(*correctness(10, 2))
    assert difference.diff == pytest.approx(8 / 40) and difference.low < 8 / 40 < difference.high


def test_paired_bootstrap_interval_covers_the_true_difference_and_is_seeded():
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(60):  # 60 synthetic eval sets of 300 examples, true difference 0.05
        base = rng.normal(0.6, 0.2, 300)
        a, b = base + 0.05 + rng.normal(0, 0.1, 300), base + rng.normal(0, 0.1, 300)
        found = paired_bootstrap(mean_statistic(a), mean_statistic(b), 300, resamples=500)
        covered += found.low <= 0.05 <= found.high
    assert covered >= 51  # ~95% nominal coverage; 51/60 = 85% leaves room for sampling noise
    a, b = rng.normal(0.5, 0.1, 50), rng.normal(0.5, 0.1, 50)
    first, again = (paired_bootstrap(mean_statistic(a), mean_statistic(b), 50) for _ in range(2))
    assert first == again  # same seed, same interval and p
    assert paired_bootstrap(mean_statistic(a), mean_statistic(b), 50, seed=1) != first
    strong = paired_bootstrap(mean_statistic(a + 0.2), mean_statistic(a), 50)
    assert strong.p < 0.001 and strong.low == pytest.approx(0.2) == strong.high  # a constant shift


def test_bootstrapped_classification_metrics_equal_sklearn_on_every_resample():
    rng = np.random.default_rng(3)
    labels, predictions = rng.integers(0, 3, 80), rng.integers(0, 3, 80)
    statistics = classification_statistics(labels, predictions, 4)  # class 3 never occurs: scores 0 in macro
    index = rng.integers(0, 80, (5, 80))
    for row in index:
        y, p = labels[row], predictions[row]
        one = row[None, :]
        assert statistics["macro_f1"](one)[0] == pytest.approx(f1_score(y, p, average="macro", labels=range(4),
                                                                        zero_division=0))
        assert statistics["weighted_f1"](one)[0] == pytest.approx(f1_score(y, p, average="weighted",
                                                                           labels=range(4), zero_division=0))
        assert statistics["mcc"](one)[0] == pytest.approx(matthews_corrcoef(y, p))
    assert statistics["mcc"](index).shape == (5,)


def test_seed_interval_and_welch_against_hand_values():
    low, high = seed_interval([0.8, 0.9, 1.0])
    assert (low, high) == (pytest.approx(0.9 - 4.302653 * 0.1 / 3**0.5), pytest.approx(0.9 + 4.302653 * 0.1 / 3**0.5))
    assert seed_interval([0.8]) is None and welch_difference([0.8], [0.7, 0.9]) is None
    found = welch_difference([0.90, 0.91, 0.92], [0.80, 0.81, 0.82])
    assert found.diff == pytest.approx(0.1) and found.p < 0.001 and found.low < 0.1 < found.high


def classifier_run(folder, label, labels, predictions, texts=None, config=None, task="classification"):
    """A finished classification run dir whose summary agrees with its predictions.csv."""
    names = ["neg", "pos"]
    texts = texts or [f"review number {i}" for i in range(len(labels))]
    rows = [["text", "label", "prediction"]]
    rows += [[t, names[y], names[p]] for t, y, p in zip(texts, labels, predictions, strict=True)]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    metrics = classification_metrics(np.array(labels), np.array(predictions), 2)
    return make_run(folder, label, metrics, config, task=task, files={"predictions.csv": buffer.getvalue()})


def test_compare_says_indistinguishable_when_runs_differ_by_chance(tmp_path):
    labels = [i % 2 for i in range(20)]
    a = [y if i not in (0, 3, 5, 8) else 1 - y for i, y in enumerate(labels)]  # 16/20
    b = [y if i not in (0, 3, 5, 9, 12) else 1 - y for i, y in enumerate(labels)]  # 15/20
    classifier_run(tmp_path, "a", labels, a, config={"train.lr": 0.001})
    classifier_run(tmp_path, "b", labels, b, config={"train.lr": 0.002})
    table = build_comparison(find_runs([str(tmp_path)]))
    assert not any(r.best for r in table.rows) and all(r.tied for r in table.rows)
    assert table.verdict.state == "indistinguishable"
    text = markdown_table(table)
    assert "are indistinguishable by accuracy at α = 0.05" in text and "a (tied)" in text
    assert "(best)" not in text and "McNemar exact" in text and "p = 1.000" in text  # b = 2, c = 1
    page = render_report(find_runs([str(tmp_path)]))
    assert "indistinguishable" in page and "(best)" not in page and "a (tied)" in page


def test_compare_marks_best_when_one_run_is_clearly_better(tmp_path, capsys):
    labels = [i % 2 for i in range(200)]
    good = [y if i % 10 else 1 - y for i, y in enumerate(labels)]  # 90%
    poor = [y if i % 3 else 1 - y for i, y in enumerate(labels)]  # 66%
    classifier_run(tmp_path, "good", labels, good, config={"train.lr": 0.001})
    classifier_run(tmp_path, "poor", labels, poor, config={"train.lr": 0.002})
    table = build_comparison(find_runs([str(tmp_path)]))
    assert [r.label for r in table.rows if r.best] == ["good"] and table.verdict.state == "best"
    poor_row = next(r for r in table.rows if r.label == "poor")
    assert poor_row.versus.test == "McNemar exact" and poor_row.versus.p < 0.001
    assert poor_row.versus.low < poor_row.versus.diff < poor_row.versus.high < 0
    assert "good is best by accuracy, better than the runner-up at α = 0.05" in markdown_table(table)
    rows = {r["label"]: r for r in csv.DictReader(io.StringIO(csv_text(table)))}
    assert rows["good"]["best"] == "1" and float(rows["poor"]["vs_best_p"]) < 0.001
    # the bootstrap on macro_f1 agrees
    by_f1 = build_comparison(find_runs([str(tmp_path)]), metric="macro_f1")
    assert by_f1.verdict.state == "best" and "paired bootstrap" in markdown_table(by_f1)
    # a level so strict that even this difference is not enough
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["compare", str(tmp_path), "--format", "markdown", "--alpha", "1e-12"])
    assert args.handler(args) == 0 and "indistinguishable by accuracy at α = 1e-12" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["compare", str(tmp_path), "--alpha", "1.5"])
    args = parser.parse_args(["report", str(tmp_path), "--alpha", "1e-12"])
    assert args.handler(args) == 0
    assert "indistinguishable by accuracy at α = 1e-12" in (tmp_path / "report.html").read_text()


def test_identical_predictions_are_flagged(tmp_path):
    labels = [i % 2 for i in range(30)]
    same = [y if i % 4 else 1 - y for i, y in enumerate(labels)]
    classifier_run(tmp_path, "trial-000", labels, same, config={"train.lr": 0.001})
    classifier_run(tmp_path, "trial-001", labels, same, config={"train.lr": 0.002})
    classifier_run(tmp_path, "trial-002", labels, labels, config={"train.lr": 0.003})
    table = build_comparison(find_runs([str(tmp_path)]))
    note = "runs trial-000 and trial-001 made identical predictions on all 30 examples (predictions.csv)"
    assert note in table.verdict.notes and note in markdown_table(table)
    assert sum("identical predictions" in n for n in table.verdict.notes) == 1  # trial-002 differs


def test_runs_on_different_examples_get_no_paired_test(tmp_path):
    labels = [i % 2 for i in range(40)]
    classifier_run(tmp_path, "a", labels, labels, config={"train.lr": 0.001})
    classifier_run(tmp_path, "b", labels, [1 - y for y in labels], texts=[f"other {i}" for i in range(40)],
                   config={"train.lr": 0.002})
    table = build_comparison(find_runs([str(tmp_path)]))
    assert table.verdict.state == "untested" and [r.label for r in table.rows if r.best] == ["a"]
    assert "different examples" in markdown_table(table) and "best by accuracy value only" in markdown_table(table)


def test_a_stale_predictions_file_is_not_used(tmp_path):
    labels = [i % 2 for i in range(40)]
    run = classifier_run(tmp_path, "a", labels, labels)
    summary = json.loads((run / "summary.json").read_text())
    summary["metrics"]["accuracy"] = 0.5  # the summary of another evaluation
    (run / "summary.json").write_text(json.dumps(summary))
    (record,) = find_runs([str(run)])
    reason = scores_for_metric(record, read_example_scores(record), "accuracy")
    assert reason == "predictions.csv of a gives accuracy 1.0000, summary.json 0.5000"


def qa_run(folder, label, predictions, gold, lr):
    rows = [{"id": f"q{i}", "question": "?", "prediction": p, "gold": g}
            for i, (p, g) in enumerate(zip(predictions, gold, strict=True))]
    return make_run(folder, label, {"exact": 0.0, "f1": 0.0}, {"train.lr": lr}, task="qa",
                    files={"predictions.jsonl": rows})


def test_qa_f1_is_bootstrapped_per_question_and_sft_loss_is_not_tested(tmp_path):
    gold = [["Paris"], ["the red fox"], [], ["1912"]] * 10
    exact = [g[0] if g else "" for g in gold]
    half = [("red" if g == ["the red fox"] else g[0] if g else "") for g in gold]
    for lr, (label, predictions) in enumerate((("qa_exact", exact), ("qa_partial", half))):
        run = qa_run(tmp_path, label, predictions, gold, lr)
        (record,) = find_runs([str(run)])
        scores = read_example_scores(record)
        every = np.arange(scores.n)[None, :]
        summary = json.loads((run / "summary.json").read_text())
        summary["metrics"] = {k: float(scores.statistics[k](every)[0]) for k in ("exact", "f1")}
        (run / "summary.json").write_text(json.dumps(summary))
    assert summary["metrics"]["f1"] == pytest.approx(100 * (30 + 10 * 2 * 0.5 * 1 / 1.5) / 40)
    table = build_comparison(find_runs([str(tmp_path)]), metric="f1")
    partial = next(r for r in table.rows if r.label == "qa_partial")
    assert partial.versus.test == "paired bootstrap" and partial.versus.n == 40
    assert partial.versus.diff == pytest.approx(summary["metrics"]["f1"] - 100.0)
    for label, loss in (("sft_a", 1.2), ("sft_b", 1.3)):
        make_run(tmp_path / "sft", label, {"eval_loss": loss}, {"train.lr": loss}, task="sft")
    table = build_comparison(find_runs([str(tmp_path / "sft")]))
    assert table.verdict.state == "untested" and "sft writes no per-example eval_loss" in markdown_table(table)


def test_sft_sentence_bleu_is_bootstrapped_and_identical_generations_flagged(tmp_path):
    prompts = [f"prompt {i}" for i in range(30)]
    runs = (("sft_a", [60.0] * 30, 1e-4), ("sft_b", [20.0, 40.0] * 15, 2e-4), ("sft_c", [20.0, 40.0] * 15, 3e-4))
    for label, bleu, lr in runs:
        rows = [{"prompt": p, "generation": f"answer {bleu[i]}", "reference": "ref", "bleu": bleu[i], "chrf": 50.0}
                for i, p in enumerate(prompts)]
        make_run(tmp_path, label, {"eval_loss": 1.0, "bleu": float(np.mean(bleu))}, {"train.lr": lr}, task="sft",
                 files={"generations.jsonl": rows})
    table = build_comparison(find_runs([str(tmp_path)]), metric="bleu")
    b = next(r for r in table.rows if r.label == "sft_b")
    assert b.versus.test == "paired bootstrap" and b.versus.diff == pytest.approx(-30.0) and b.versus.p < 0.001
    assert table.verdict.state == "best" and [r.label for r in table.rows if r.best] == ["sft_a"]
    note = "runs sft_b and sft_c made identical predictions on all 30 examples (generations.jsonl)"
    assert note in table.verdict.notes


def test_runs_without_per_example_files_but_equal_metrics_are_flagged(tmp_path):
    metrics = {"reward_accuracy": 0.625, "reward_margin": 0.0132, "eval_loss": 0.6899}
    for label, lr in (("dpo_a", 1e-6), ("dpo_b", 5e-6)):
        make_run(tmp_path, label, metrics, {"train.lr": lr}, task="dpo")
    make_run(tmp_path, "dpo_c", {**metrics, "eval_loss": 0.6898}, {"train.lr": 1e-5}, task="dpo")
    table = build_comparison(find_runs([str(tmp_path)]))
    note = ("runs dpo_a and dpo_b report identical values of all 3 metrics; their predictions cannot be compared "
            "(no pairs.jsonl in dpo_a)")
    assert table.verdict.notes[1:] == [note] and table.verdict.state == "untested"
