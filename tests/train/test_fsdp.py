"""FSDP (`train.fsdp: true` under `tunelab run --nproc 2`, gloo on CPU): weights, gradients and optimizer
state sharded over two processes train like one process, and the artifact gathered at the end reloads in a
single process with the run's metrics. Tasks whose loss bypasses the model's forward are refused in one line."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tests.train.test_data_parallel import classification, lm, losses, only_run, run_two_processes, weights
from tunelab.cli import main
from tunelab.models.artifact import load_run_model


def sharded(recipe: dict) -> dict:
    train = {k: v for k, v in recipe["train"].items() if k not in ("eval_every", "checkpoint_every")}
    return {**recipe, "train": {**train, "fsdp": True}}


@pytest.mark.parametrize("family", [lm, classification])
def test_sharded_two_processes_train_like_one_and_the_artifact_reloads(family, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_QUIET", "1")
    recipe = tmp_path / "fsdp.yaml"
    recipe.write_text(yaml.safe_dump({"name": "fsdp", "output_dir": str(tmp_path / "runs"),
                                      **sharded(family(tmp_path))}))
    assert main(["run", str(recipe), "name=one"]) == 0
    done = run_two_processes(recipe, "name=two")
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = only_run(tmp_path / "runs" / "one"), only_run(tmp_path / "runs" / "two")
    assert losses(two) == pytest.approx(losses(one), rel=1e-4, abs=1e-5)
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-3, atol=1e-4, msg=name)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["processes"] == 2
    loaded = load_run_model(two)  # one process, no process group
    metric = loaded.task.default_metric
    loaded.task.prepare_data(loaded.tokenizer, "reloaded", None)
    assert loaded.task.evaluate(loaded.model)[metric] == pytest.approx(summary["metrics"][metric], rel=1e-5)


def test_a_task_whose_loss_bypasses_the_forward_is_refused_in_one_line(tmp_path):
    from tests.train.test_data_parallel import sft

    recipe = tmp_path / "sft.yaml"
    recipe.write_text(yaml.safe_dump({"name": "sft", "output_dir": str(tmp_path / "runs"), **sharded(sft(tmp_path))}))
    done = run_two_processes(recipe)
    assert done.returncode != 0
    assert "train.fsdp: task sft computes its loss" in done.stderr
    assert "Traceback" not in "\n".join(line for line in done.stderr.splitlines() if line.startswith("[rank0]"))
