"""Complete checkpoints: a run killed mid-way and resumed ends bit-identical to an uninterrupted one,
even with BatchNorm statistics, numpy- and torch-random augmentation and dropout in the data path."""

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.rundir import RunDir
from tunelab.tasks.registry import TASK_REGISTRY, TaskInfo
from tunelab.train.checkpoint import load_best, model_state, save_best
from tunelab.train.loop import train
from tunelab.train.precision import Precision

from . import toy_cnn
from .toy_cnn import ToyCNNTask

FP32 = Precision("fp32", "cpu")
STEPS = {"max_steps": 10, "checkpoint_every": 3, "lr": 0.05, "batch_size": 8, "precision": "fp32", "log_every": 1}


@pytest.fixture(autouse=True)
def toy_architecture():
    toy_cnn.register()


def toy_config(**train):
    from tunelab.recipes import validate

    return validate({"data": {"dataset": "x"}, "train": {**STEPS, **train}})


def run(tmp_path, name, task, resume=False):
    torch.manual_seed(0)
    model = task.build_model()
    folder = RunDir(tmp_path / name)
    folder.path.mkdir(parents=True, exist_ok=True)
    result = train(model, task, task.config.train, folder, FP32, torch.device("cpu"), resume=resume)
    return result, model


def crash_at(task, call):
    original, calls = task.loss_fn, {"n": 0}

    def crashing(model, batch):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(model, batch)

    task.loss_fn = crashing


def test_killed_and_resumed_cnn_is_bit_identical(tmp_path):
    full, full_model = run(tmp_path, "full", ToyCNNTask(toy_config()))
    task = ToyCNNTask(toy_config())
    crash_at(task, 8)  # after the checkpoint at step 6
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "resumed", task)
    resumed, resumed_model = run(tmp_path, "resumed", ToyCNNTask(toy_config()), resume=True)
    assert resumed.steps == full.steps == 10
    full_state, resumed_state = full_model.state_dict(), resumed_model.state_dict()
    assert "norm.running_mean" in full_state and int(full_state["norm.num_batches_tracked"]) == 10
    for name, value in full_state.items():
        assert torch.equal(value, resumed_state[name]), name
    assert resumed.metrics == full.metrics


def test_load_best_restores_batchnorm_statistics(tmp_path):
    model = ToyCNNTask().build_model()
    model.norm.running_mean.fill_(0.5)
    save_best(tmp_path / "best", model_state(model))
    model.norm.running_mean.fill_(-3.0)
    model.norm.num_batches_tracked.fill_(99)
    load_best(tmp_path / "best", model)
    assert torch.equal(model.norm.running_mean, torch.full_like(model.norm.running_mean, 0.5))
    assert int(model.norm.num_batches_tracked) == 0


def test_resume_refuses_a_checkpoint_without_the_task_generator(tmp_path):
    task = ToyCNNTask(toy_config())
    crash_at(task, 5)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "r", task)
    other = ToyCNNTask(toy_config())
    other.generators["sampling"] = other.generators.pop("augment")
    with pytest.raises(TunelabError, match="no state for the task's 'sampling' generator"):
        run(tmp_path, "r", other, resume=True)


def test_from_scratch_run_saves_an_artifact_that_reloads_exactly(tmp_path, monkeypatch):
    from tunelab.models.artifact import load_run_model
    from tunelab.recipes import validate
    from tunelab.runner import run_recipe

    monkeypatch.setitem(TASK_REGISTRY, "toy_cnn", TaskInfo("tests.train.toy_cnn:ToyCNNTask", "accuracy", "toy"))
    config = validate({"name": "cnn", "task": "toy_cnn", "model": {"arch": {"type": "toy_cnn", "channels": 3}},
                       "data": {"dataset": "x"}, "train": STEPS, "output_dir": str(tmp_path)})
    outcome = run_recipe(config)[0]
    artifact = outcome.run_dir / "artifact"
    assert sorted(p.name for p in artifact.iterdir()) == ["model.safetensors", "tunelab_model.json"]
    loaded = load_run_model(outcome.run_dir)
    assert loaded.model.conv.out_channels == 3
    task = ToyCNNTask(config)
    assert task.evaluate(loaded.model) == pytest.approx(outcome.summary["metrics"])


def test_unknown_arch_setting_is_one_line_naming_the_key():
    from tunelab.models.scratch import parse_arch

    with pytest.raises(TunelabError, match=r"model.arch.chanels: unknown setting of architecture 'toy_cnn'"):
        parse_arch({"type": "toy_cnn", "chanels": 3})
    with pytest.raises(TunelabError, match=r"model.arch.type: unknown architecture 'resnet9'"):
        parse_arch({"type": "resnet9"})
