"""The comparison table on hand-written run dirs: columns come from what the runs contain, the best row
follows the recipe's metric and its direction, seeds fold into mean ± std, and the CLI prints/writes it."""

import argparse
import csv
import io

import pytest

from tunelab.errors import TunelabError
from tunelab.report.compare import build_comparison, csv_text, lower_is_better, markdown_table
from tunelab.report.runs import find_runs, records_from_outcomes
from tunelab.runner import RunOutcome
from tunelab.trials.commands import add_parsers

from .fabricate import classification_metrics, make_run


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="verb"))
    return parser.parse_args(argv)


def test_columns_are_the_varying_params_and_the_summaries_metrics(tmp_path):
    make_run(tmp_path, "lora", classification_metrics(0.80), {"adapter.variant": "lora"}, trainable=1000)
    make_run(tmp_path, "dora", classification_metrics(0.85), {"adapter.variant": "dora"}, trainable=1100)
    table = build_comparison(find_runs([str(tmp_path)]))
    keys = [c.key for c in table.columns]
    assert keys[:2] == ["label", "adapter.variant"]  # only the key that differs; lr, rank... are shared
    assert "train.lr" not in keys and "adapter.rank" not in keys
    assert keys.index("accuracy") < keys.index("macro_f1") < keys.index("samples_per_s")
    assert "confusion_matrix" not in keys  # not a scalar
    assert {"trainable_params", "wall_seconds", "samples_per_s"} <= set(keys)
    text = markdown_table(table)
    assert "| **dora** (best) | dora |" in text and "| lora | lora |" in text
    assert "best by accuracy (higher is better)" in text


def test_sft_metrics_without_classification_columns_and_lower_is_better(tmp_path):
    for label, loss, bleu in (("r4", 2.1, 10.0), ("r8", 1.7, 12.5), ("r16", 1.9, 11.0)):
        metrics = {"eval_loss": loss, "perplexity": 2.718 ** loss, "bleu": bleu}
        make_run(tmp_path, label, metrics, {"adapter.rank": int(label[1:]), "eval.metric": "eval_loss"}, task="sft")
    table = build_comparison(find_runs([str(tmp_path / "r*")]))
    keys = [c.key for c in table.columns]
    assert "accuracy" not in keys and "mcc" not in keys
    assert keys[keys.index("adapter.rank") + 2:][:3] == ["eval_loss", "perplexity", "bleu"]
    assert table.metric == "eval_loss" and lower_is_better("eval_loss") and lower_is_better("perplexity")
    assert [r.label for r in table.rows if r.best] == ["r8"]
    by_bleu = build_comparison(find_runs([str(tmp_path)]), metric="bleu", sort=True)
    assert [r.label for r in by_bleu.rows] == ["r8", "r16", "r4"] and by_bleu.rows[0].best


def test_runs_differing_only_in_seed_show_mean_and_std(tmp_path):
    for variant, accuracies in (("lora", (0.80, 0.90, 1.00)), ("dora", (0.84, 0.86, 0.85))):
        for seed, accuracy in enumerate(accuracies):
            make_run(tmp_path, f"{variant}_s{seed}", classification_metrics(accuracy),
                     {"adapter.variant": variant, "train.seed": seed})
    table = build_comparison(find_runs([str(tmp_path)]))
    assert table.grouped and [r.label for r in table.rows] == ["dora", "lora"]  # folders in sorted order
    assert "train.seed" not in [c.key for c in table.columns]
    lora = table.rows[1]
    mean, std, n = lora.cells["accuracy"]
    assert (mean, std, n) == (pytest.approx(0.90), pytest.approx(0.10), 3)
    assert lora.cells["seeds"] == "0,1,2"
    # 0.90 ± 0.10 against 0.85 ± 0.01 over three seeds is within chance (Welch t): no row is marked best
    assert not any(r.best for r in table.rows) and all(r.tied for r in table.rows)
    assert lora.cells["seed_ci"] == (pytest.approx(0.9 - 4.3027 * 0.1 / 3**0.5, abs=1e-4),
                                     pytest.approx(0.9 + 4.3027 * 0.1 / 3**0.5, abs=1e-4))
    text = markdown_table(table)
    assert "0.9000 ± 0.1000" in text and "mean ± std" in text
    assert "lora (tied)" in text and "are indistinguishable by accuracy at α = 0.05" in text
    rows = list(csv.DictReader(io.StringIO(csv_text(table))))
    assert rows[1]["label"] == "lora" and float(rows[1]["accuracy"]) == pytest.approx(0.9)
    assert float(rows[1]["accuracy_std"]) == pytest.approx(0.1) and rows[1]["n"] == "3" and rows[1]["best"] == "0"
    assert rows[1]["tied"] == "1" and rows[0]["vs_best_test"] == "Welch t (seeds)"
    assert float(rows[0]["vs_best_diff"]) == pytest.approx(-0.05) and float(rows[0]["vs_best_p"]) > 0.05
    ungrouped = build_comparison(find_runs([str(tmp_path)]), group_seeds=False)
    assert len(ungrouped.rows) == 6 and "train.seed" in [c.key for c in ungrouped.columns]


def test_duplicate_labels_get_their_folder_and_globs_expand(tmp_path):
    make_run(tmp_path / "sweep-a", "trial-000", classification_metrics(0.7), {"train.lr": 0.001})
    make_run(tmp_path / "sweep-b", "trial-000", classification_metrics(0.8), {"train.lr": 0.0003})
    records = find_runs([str(tmp_path / "sweep-*")])
    assert sorted(r.label for r in records) == ["sweep-a/trial-000", "sweep-b/trial-000"]
    table = build_comparison(records)
    assert [row.cells["train.lr"] for row in table.rows] == [0.001, 0.0003]
    assert "0.0003" in markdown_table(table)  # hyper-parameters keep their precision
    with pytest.raises(TunelabError, match="no finished runs"):
        find_runs([str(tmp_path / "nothing-*")])


def test_compare_cli_prints_markdown_and_writes_csv(tmp_path, capsys):
    make_run(tmp_path, "a", classification_metrics(0.7), {"train.lr": 0.001})
    make_run(tmp_path, "b", classification_metrics(0.9), {"train.lr": 0.002})
    out = tmp_path / "table.csv"
    args = parse("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "markdown", "--csv", str(out))
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert "| **b** (best) |" in printed and "train.lr" in printed
    rows = list(csv.DictReader(out.open()))
    assert [r["label"] for r in rows] == ["a", "b"] and [r["best"] for r in rows] == ["0", "1"]


def test_records_from_runner_outcomes_keep_labels(tmp_path):
    run = make_run(tmp_path, "x", classification_metrics(0.5))
    records = records_from_outcomes([RunOutcome("variant-x", run, {"metrics": {"accuracy": 0.5}})])
    assert records[0].label == "variant-x" and records[0].config["task"] == "classification"


@pytest.mark.parametrize("labels, expected", [
    (["lora_s0", "lora_s1", "lora_s2"], "lora"), (["sft_r16_s0", "sft_r16_s1"], "sft_r16"),
    (["dora_seed0", "dora_seed1"], "dora"), (["trial-000", "trial-004"], "trial-000,004"), (["x", "y"], "x+y")])
def test_seed_group_labels(labels, expected):
    from tunelab.report.compare import group_label

    assert group_label(labels) == expected
