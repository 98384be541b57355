import pytest
import torch

from tunelab.rundir import RunDir
from tunelab.train.loop import train
from tunelab.train.optim import lr_multiplier
from tunelab.train.precision import Precision

from .toy_task import ToyTask

FP32 = Precision("fp32", "cpu")


def run_toy(tmp_path, name, overrides=None, resume=False, task=None):
    task = task or ToyTask(overrides)
    torch.manual_seed(0)
    model = task.build_model()
    run = RunDir(tmp_path / name)
    run.path.mkdir(parents=True, exist_ok=True)
    return train(model, task, task.config.train, run, FP32, torch.device("cpu"), resume=resume), model


def test_loop_learns_a_separable_task(tmp_path):
    result, _ = run_toy(tmp_path, "a", {"train.epochs": 3})
    assert result.metrics["accuracy"] > 0.97
    losses = [r["loss"] for r in result.history if "loss" in r]
    assert losses[-1] < losses[0] / 3
    assert result.steps == 3 * 16 and result.samples == 3 * 256


def test_grad_accumulation_counts_optimizer_steps(tmp_path):
    result, _ = run_toy(tmp_path, "b", {"train.grad_accum": 4, "train.epochs": 1})
    assert result.steps == 4 and result.samples == 256


def test_resume_after_interruption_gives_identical_result(tmp_path):
    overrides = {"train.max_steps": 20, "train.checkpoint_every": 5}
    full, full_model = run_toy(tmp_path, "full", overrides)

    task = ToyTask(overrides)
    calls = {"n": 0}
    original = task.loss_fn

    def crash_at_step_13(model, batch):
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt
        return original(model, batch)

    task.loss_fn = crash_at_step_13
    with pytest.raises(KeyboardInterrupt):
        run_toy(tmp_path, "resumed", overrides, task=task)
    resumed, resumed_model = run_toy(tmp_path, "resumed", overrides, resume=True)
    assert resumed.steps == 20
    assert resumed.metrics == full.metrics
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [r["step"] for r in resumed.history] == list(range(1, 21))  # no doubled lines after resume


def test_early_stopping_and_best_checkpoint(tmp_path):
    # a huge lr makes evals worsen after the first; patience 2 stops the run early
    result, _ = run_toy(tmp_path, "es", {"train.epochs": 20, "train.eval_every": 2, "train.early_stopping": 2,
                                         "train.lr": 5.0})
    assert result.stopped_early
    assert result.steps < 20 * 16
    assert (tmp_path / "es" / "checkpoints" / "best" / "trainable.safetensors").exists()


def test_step_schedule_matches_seed_000():
    from tunelab.recipes import validate

    train_cfg = {"lr": 1e-3, "schedule": "step", "warmup_ratio": 0, "step_milestones": [0.5, 0.75],
                 "step_lrs": [3e-4, 1e-4]}
    cfg = validate({"data": {"dataset": "x"}, "train": train_cfg}).train
    lrs = [1e-3 * lr_multiplier(s, 40, cfg) for s in (0, 19, 20, 29, 30, 39)]
    assert lrs == pytest.approx([1e-3, 1e-3, 3e-4, 3e-4, 1e-4, 1e-4])


def test_warmup_then_linear_decay():
    from tunelab.recipes import validate

    cfg = validate({"data": {"dataset": "x"}, "train": {"warmup_ratio": 0.1, "schedule": "linear"}}).train
    assert lr_multiplier(0, 100, cfg) == pytest.approx(0.1)
    assert lr_multiplier(9, 100, cfg) == pytest.approx(1.0)
    assert lr_multiplier(99, 100, cfg) == pytest.approx(1 / 90)


class NanAtSteps(ToyTask):
    """The toy task whose loss is NaN on chosen optimizer steps (as an fp16 overflow or a bad batch makes it)."""

    def __init__(self, overrides, nan_steps):
        super().__init__(overrides)
        self.nan_steps, self.calls = set(nan_steps), 0

    def loss_fn(self, model, batch):
        self.calls += 1
        loss, logged = super().loss_fn(model, batch)
        return (loss * float("nan") if self.calls in self.nan_steps else loss), logged


def test_a_nan_step_is_skipped_and_the_weights_stay_finite(tmp_path):
    task = NanAtSteps({"train.max_steps": 12}, nan_steps={3, 7})
    result, model = run_toy(tmp_path, "nan", task=task)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    warnings = [r for r in result.history if "warning" in r]
    assert [r["step"] for r in warnings] == [3, 7]
    assert result.metrics["accuracy"] > 0.9  # the other steps trained normally


def test_nan_steps_in_a_row_stop_the_run_with_one_line(tmp_path):
    from tunelab.errors import TunelabError

    task = NanAtSteps({"train.max_steps": 20, "train.nan_patience": 3}, nan_steps={5, 6, 7, 8})
    with pytest.raises(TunelabError, match="NaN/inf for 3 steps in a row \\(up to step 7\\)"):
        run_toy(tmp_path, "nan_stop", task=task)
