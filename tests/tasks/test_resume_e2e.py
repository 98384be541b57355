"""A real classification run (MiniLM + LoRA) interrupted mid-training and resumed with the CLI's
`--resume RUN_DIR` path ends with exactly the metrics and weights of an uninterrupted run."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tunelab.recipes import load_recipe
from tunelab.runner import run_recipe
from tunelab.tasks.classification import ClassificationTask

SMALL = ["data.limit=64", "data.eval_limit=32", "train.batch_size=16", "train.max_steps=6",
         "train.checkpoint_every=2", "adapter.dropout=0.1", "adapter.plan=fixed", "adapter.max_trainable=null"]


def config(root, name):
    return load_recipe("configs/demo.yaml", [*SMALL, f"output_dir={root}", "variants={}", f"name={name}"])


def test_interrupted_run_resumes_to_identical_result(tmp_path, monkeypatch):
    full = run_recipe(config(tmp_path, "full"))[0]

    calls = {"n": 0}
    original = ClassificationTask.loss_fn

    def crash_in_step_five(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # what Ctrl-C or a kill looks like to the loop
        return original(self, model, batch)

    monkeypatch.setattr(ClassificationTask, "loss_fn", crash_in_step_five)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(config(tmp_path, "cut"))
    monkeypatch.setattr(ClassificationTask, "loss_fn", original)
    (run_dir,) = list((tmp_path / "cut").iterdir())
    assert not (run_dir / "summary.json").exists()
    assert json.loads((run_dir / "checkpoints" / "last" / "position.json").read_text())["step"] == 4

    resumed = run_recipe(config(tmp_path, "cut"), resume=run_dir)[0]
    assert resumed.run_dir == run_dir and resumed.summary["steps"] == 6
    assert resumed.summary["metrics"] == full.summary["metrics"]
    ours = load_file(str(run_dir / "artifact" / "adapter_model.safetensors"))
    theirs = load_file(str(full.run_dir / "artifact" / "adapter_model.safetensors"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
