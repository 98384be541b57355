"""FSDP (`train.fsdp: true` under `tunelab run --nproc 2`, gloo on CPU): weights, gradients and optimizer
state sharded over two processes train like one process, and the artifact gathered at the end reloads in a
single process with the run's metrics. DPO stands for the decoder tasks whose loss projects hidden states
through the output embedding outside the model's forward (sft, grpo alike) and that run the model to build
a batch (its reference log-probs; grpo's rollouts): the root of the sharding is the loss itself."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tests.train.test_data_parallel import classification, dpo, lm, losses, only_run, run_two_processes, weights
from tunelab.cli import main
from tunelab.models.artifact import load_run_model


def sharded(recipe: dict) -> dict:
    train = {k: v for k, v in recipe["train"].items() if k not in ("eval_every", "checkpoint_every")}
    return {**recipe, "train": {**train, "fsdp": True}}


@pytest.mark.parametrize("family", [lm, classification, dpo])
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

