"""FSDP (`train.fsdp: true` under `tunelab run --nproc 2`, gloo on CPU): weights, gradients and optimizer
state sharded over two processes train like one process, and the artifact gathered at the end reloads in a
single process with the run's metrics. DPO stands for the decoder tasks whose loss projects hidden states
through the output embedding outside the model's forward (sft, grpo alike) and that run the model to build
a batch (its reference log-probs; grpo's rollouts): the root of the sharding is the loss itself.
Periodic evaluations run on every rank (the same metrics as one process logs) and checkpoints hold the
gathered weights and optimizer state, so a killed sharded run resumes to the uninterrupted result."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tests.train.test_data_parallel import (
    RESUMED,
    classification,
    dpo,
    killed_and_resumed,
    lm,
    losses,
    only_run,
    run_two_processes,
    weights,
)
from tunelab.cli import main
from tunelab.models.artifact import load_run_model


def sharded(recipe: dict) -> dict:
    return {**recipe, "train": {**recipe["train"], "fsdp": True}}


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
    first, second = periodic(one), periodic(two)
    assert [sorted(e) for e in second] == [sorted(e) for e in first]
    assert [e[k] for e in second for k in sorted(e)] == pytest.approx([e[k] for e in first for k in sorted(e)],
                                                                      rel=1e-4, abs=1e-5)
    assert first or "eval_every" not in family(tmp_path)["train"]
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



def periodic(run) -> list[dict[str, float]]:
    """The metrics of every periodic evaluation in the run's metrics.jsonl."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [line["eval"] for line in lines if "eval" in line]


def test_a_killed_sharded_run_resumes_to_the_uninterrupted_result(tmp_path):
    """The weights and optimizer state gathered whole into the checkpoint go back into each rank's shard,
    BatchNorm statistics and every rank's RNG with them: the resumed run logs the uninterrupted run's
    losses and periodic metrics and ends with its weights."""
    recipe = tmp_path / "vision.yaml"
    train = {**RESUMED["train"], "fsdp": True, "eval_every": 8}
    recipe.write_text(yaml.safe_dump({"name": "vision", "output_dir": str(tmp_path / "runs"),
                                      **{**RESUMED, "train": train}}))
    whole, cut = killed_and_resumed(recipe, tmp_path / "runs")
    assert losses(cut) == losses(whole) and periodic(cut) == periodic(whole) and periodic(whole)
    ours, theirs = weights(cut), weights(whole)
    assert any("running_mean" in k for k in ours) and ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
