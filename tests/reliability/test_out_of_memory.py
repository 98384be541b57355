"""Out of memory in a micro-batch's forward or backward stops the run with one line naming the step, the
micro-batch's shapes and the settings to lower; the checkpoint saved before it stays intact and resumes."""

from __future__ import annotations

import pytest
import torch

from tests.train.test_loop import run_toy
from tests.train.toy_task import ToyTask
from tunelab.errors import TunelabError
from tunelab.recipes import validate
from tunelab.train.out_of_memory import lower_memory_hint

OOM_CASES = {  # the errors the allocators really raise (torch.OutOfMemoryError is what CUDA raises)
    "cuda": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB "
                                           "total capacity)"),
    "cpu": lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                                "memory: you tried to allocate 68719476736 bytes. Error code 12"),
    "plain_runtime": lambda: RuntimeError("CUDA error: out of memory"),
}


class _RaiseInBackward(torch.autograd.Function):
    """Identity forward; the backward raises, as an allocation in the backward pass does."""

    @staticmethod
    def forward(ctx, x, make_error):
        ctx.make_error = make_error
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise ctx.make_error()


class OutOfMemoryAt(ToyTask):
    """The toy task whose `where` (forward or backward) runs out of memory on the given loss call."""

    def __init__(self, overrides, call, make_error, where="forward"):
        super().__init__(overrides)
        self.call, self.make_error, self.where, self.calls = call, make_error, where, 0

    def loss_fn(self, model, batch):
        self.calls += 1
        loss, logged = super().loss_fn(model, batch)
        if self.calls == self.call and self.where == "forward":
            raise self.make_error()
        if self.calls == self.call:
            loss = _RaiseInBackward.apply(loss, self.make_error)
        return loss, logged


OVERRIDES = {"train.max_steps": 6, "train.checkpoint_every": 2, "train.batch_size": 16}


@pytest.mark.parametrize("where", ["forward", "backward"])
@pytest.mark.parametrize("kind", sorted(OOM_CASES))
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_out_of_memory_on_step_3_is_one_line_and_the_checkpoint_resumes(tmp_path, kind, where, grad_accum):
    overrides = {**OVERRIDES, "train.grad_accum": grad_accum}
    call = 2 * grad_accum + 1  # the first micro-batch of optimizer step 3
    task = OutOfMemoryAt(overrides, call, OOM_CASES[kind], where)
    with pytest.raises(TunelabError) as caught:
        run_toy(tmp_path, "run", task=task)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("train: out of memory at step 3 on a micro-batch of x (16, 4), labels (16,)")
    assert f"train.batch_size=8 and train.grad_accum={2 * grad_accum}" in message
    assert f"keeps the global batch of {16 * grad_accum}" in message
    assert "model.max_length (now 128)" in message
    assert "gradient_checkpointing" not in message  # a classification model ignores it: not offered

    # the step-2 checkpoint is untouched: resuming from it gives exactly the uninterrupted run
    resumed, resumed_model = run_toy(tmp_path, "run", overrides, resume=True, task=ToyTask(overrides))
    full, full_model = run_toy(tmp_path, "full", overrides)
    assert resumed.steps == 6 and resumed.metrics == full.metrics
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [r["step"] for r in resumed.history] == list(range(1, 7))


def test_other_runtime_errors_are_not_reported_as_memory(tmp_path):
    task = OutOfMemoryAt(OVERRIDES, 3, lambda: RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        run_toy(tmp_path, "run", task=task)


HINT_CASES = [  # (task, train settings, in the hint, not in the hint)
    ("sft", {"batch_size": 8, "grad_accum": 2}, ["train.batch_size=4 and train.grad_accum=4 (keeps the global "
     "batch of 16)", "model.max_length (now 128)", "or set train.gradient_checkpointing=true"], []),
    ("dpo", {"batch_size": 1, "gradient_checkpointing": True}, ["lower model.max_length (now 128)"],
     ["train.batch_size", "gradient_checkpointing"]),
    ("sft", {"batch_size": 5}, ["train.batch_size=2 and train.grad_accum=2 (global batch 5 -> 4)"], []),
    ("grpo", {"batch_size": 4}, ["train.batch_size=2", "model.max_length"], ["gradient_checkpointing"]),
    ("lm", {"batch_size": 1}, ["does not fit even at train.batch_size=1"], ["model.max_length"]),
]


@pytest.mark.parametrize(("task", "train", "present", "absent"), HINT_CASES)
def test_the_hint_names_only_settings_that_lower_this_tasks_memory(task, train, present, absent):
    config = validate({"task": task, "data": {"dataset": "ag_news_demo"}, "train": train})
    hint = lower_memory_hint(config)
    for text in present:
        assert text in hint
    for text in absent:
        assert text not in hint
