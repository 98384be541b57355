"""The demo recipe end to end on a tiny slice: every variant trains, the comparison and report are
written, and each saved artifact reloads onto a fresh base with identical predictions."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from tunelab.recipes import load_recipe, with_overrides
from tunelab.report.compare import write_comparison
from tunelab.runner import run_recipe

TINY = ["data.limit=96", "data.eval_limit=48", "train.batch_size=16", "adapter.max_trainable=60000"]


@pytest.fixture(scope="module")
def demo_outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    config = load_recipe("configs/demo.yaml", [*TINY, f"output_dir={root}"])
    outcomes = run_recipe(config)
    write_comparison(outcomes, outcomes[0].run_dir.parent)
    return config, outcomes


def test_every_variant_runs_within_budget(demo_outcomes):
    _, outcomes = demo_outcomes
    assert [o.label for o in outcomes] == ["lora", "dora", "dora_scaled", "ddora"]
    for outcome in outcomes:
        summary = json.loads((outcome.run_dir / "summary.json").read_text())
        assert summary["variant"] == outcome.label
        assert 0 < summary["trainable_params"] <= 60000
        assert summary["train_samples"] == 96
        assert set(summary["metrics"]) >= {"accuracy", "macro_f1", "weighted_f1", "mcc", "confusion_matrix"}
        for name in ("config.yaml", "metrics.jsonl", "predictions.csv", "confusion_matrix.png", "artifact"):
            assert (outcome.run_dir / name).exists(), name


def test_comparison_and_report_written(demo_outcomes):
    _, outcomes = demo_outcomes
    group = outcomes[0].run_dir.parent
    table = (group / "comparison.md").read_text()
    assert all(label in table for label in ("lora", "dora", "dora_scaled", "ddora"))
    # every row is tested against the best on the same 48 eval texts (McNemar): either a significant best
    # row or the top rows are indistinguishable, never an untested claim
    assert "vs best (accuracy" in table and "McNemar exact, n=48" in table and "not tested" not in table
    assert ("(best)" in table) != ("are indistinguishable by accuracy" in table)
    page = (group / "report.html").read_text()
    assert "id='comparison'" in page and "data:image/png;base64" in page and "adapter.variant" in page


def test_artifact_reloads_with_identical_predictions(demo_outcomes):
    from tunelab.models.artifact import load_run_model
    from tunelab.runner import load_task

    config, outcomes = demo_outcomes
    outcome = outcomes[1]  # dora: the variant whose reload users report as "has no effect"
    variant = with_overrides(config, config.variants[outcome.label])
    _, task = load_task(variant)
    torch.manual_seed(123)  # a different head init than training: the artifact must carry the head
    model = load_run_model(outcome.run_dir).model
    predictions = task.predict(model)
    saved = pd.read_csv(outcome.run_dir / "predictions.csv")["prediction"].tolist()
    names = task.label_names
    assert [names[i] for i in predictions] == saved
    assert np.mean([p == t for p, t in zip(predictions, task.eval_set.targets, strict=True)]) == pytest.approx(
        json.loads((outcome.run_dir / "summary.json").read_text())["metrics"]["accuracy"])


def test_cli_bad_override_is_one_line_exit_2():
    result = subprocess.run([sys.executable, "-m", "tunelab", "run", "configs/demo.yaml", "adapter.rnak=4"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "adapter.rnak: unknown key (did you mean 'rank'?)" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_budget_exceeded_refuses_to_start(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tunelab", "run", "configs/demo.yaml", "adapter.plan=fixed",
                             "adapter.rank=64", "adapter.max_trainable=1000", f"output_dir={tmp_path}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "exceed adapter.max_trainable=1,000" in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.rglob("summary.json"))


def test_string_labels_map_to_training_classes_and_unknown_eval_label_is_named():
    import pandas as pd

    from tunelab.errors import TunelabError
    from tunelab.tasks.classification import encode_labels

    labels, classes = encode_labels(pd.Series(["pos", "neg", "pos"]), (), "label")
    assert classes == ["neg", "pos"] and labels.tolist() == [1, 0, 1]
    eval_labels, _ = encode_labels(pd.Series(["neg"]), (), "label", classes, where="data.eval")
    assert eval_labels.tolist() == [0]
    with pytest.raises(TunelabError, match="data.eval: label 'meh' does not occur in the training data"):
        encode_labels(pd.Series(["meh"]), (), "label", classes, where="data.eval")
