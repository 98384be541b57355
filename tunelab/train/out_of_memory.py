"""Out of memory on a micro-batch: one line naming the settings that lower the memory a step needs.

A forward/backward that runs out of memory (CUDA: `torch.OutOfMemoryError`; CPU: a RuntimeError from the
allocator) would otherwise end the run with a long traceback. The loop catches it per micro-batch and
raises a TunelabError with the step, the micro-batch's shapes and what to lower. Nothing is written on the
way out, so the last checkpoint on disk is the one saved before the failing step and `--resume` works once
the recipe is changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from tunelab.config import RunConfig
from tunelab.errors import TunelabError

# what the allocators say when they give up (torch.OutOfMemoryError covers CUDA and other accelerators)
OOM_MESSAGES = ("out of memory", "DefaultCPUAllocator: can't allocate memory")
# tasks whose batches are model.max_length tokens long, and those whose model honours gradient checkpointing
MAX_LENGTH_TASKS = {"classification", "qa", "sft", "dpo", "grpo"}
CHECKPOINTING_TASKS = {"sft", "dpo"}  # grpo refuses it (it needs the KV cache to sample)


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error) for text in OOM_MESSAGES)


def batch_shapes(batch: dict[str, Any]) -> str:
    """'input_ids (8, 512), labels (8, 512)': the tensors of a micro-batch, first three."""
    shapes = [f"{key} {tuple(value.shape)}" for key, value in batch.items() if isinstance(value, torch.Tensor)]
    return ", ".join(shapes[:3]) + (", ..." if len(shapes) > 3 else "") if shapes else "no tensors"


def lower_memory_hint(config: RunConfig) -> str:
    """The settings to change, with values: half the micro-batch with twice the accumulation keeps the
    global batch (batch_size × grad_accum), so the optimisation stays the same."""
    train = config.train
    changes = []
    if train.batch_size > 1:
        half, accum = train.batch_size // 2, train.grad_accum * 2
        before, after = train.batch_size * train.grad_accum, half * accum
        kept = f"keeps the global batch of {before}" if after == before else f"global batch {before} -> {after}"
        changes.append(f"set train.batch_size={half} and train.grad_accum={accum} ({kept})")
    if config.task in MAX_LENGTH_TASKS:
        changes.append(f"lower model.max_length (now {config.model.max_length})")
    if config.task in CHECKPOINTING_TASKS and not train.gradient_checkpointing:
        changes.append("set train.gradient_checkpointing=true")
    if not changes:
        return "this step does not fit even at train.batch_size=1: use a smaller model or a machine with more memory"
    return changes[0] if len(changes) == 1 else ", ".join(changes[:-1]) + ", or " + changes[-1]


@contextlib.contextmanager
def out_of_memory_as_error(step: int, batch: dict[str, Any], config: RunConfig) -> Iterator[None]:
    """Around one micro-batch's forward/backward; `step` is the 1-based optimizer step it belongs to."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # give the memory of the failed step back before the process exits
        raise TunelabError(f"train: out of memory at step {step} on a micro-batch of {batch_shapes(batch)}; "
                           f"{lower_memory_hint(config)}") from None
