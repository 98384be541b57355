"""Calibration: a few real training micro-steps of the recipe, measured.

Memory and time of a step are not guessed from a formula alone: the same code the run will execute
(task batches, autocast, forward, backward, optimizer step) runs on this machine for two micro-batch
sizes b1 < b2 and is measured. Per size:

- memory: one micro-step on the b longest training examples (the worst padding the run will meet), its
  peak RSS sampled (`tunelab.plan.rss`);
- time: micro-steps on batches in the run's own order, their mean wall time.

One warm-up step comes first (kernels, allocator, the optimizer's state), and the smaller size is
measured first, so memory the allocator kept from a larger step does not inflate the smaller one.
Both are then fitted by lines in b (`tunelab.plan.planner`): activations and work grow with the
examples in a micro-batch, while weights, optimizer state and per-step overheads do not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tunelab.plan.rss import current_rss_mb, sampled_peak
from tunelab.tasks.base import Task
from tunelab.train.batching import epoch_rng
from tunelab.train.loop import accumulate, optimizer_step
from tunelab.train.optim import build_optimizer, build_scheduler
from tunelab.train.precision import Precision

TIMED_STEPS = 2  # micro-steps timed per size, after the memory step


@dataclass
class SizePoint:
    """What one micro-batch size cost: peak RSS (MB) on the longest examples, seconds per micro-step."""

    size: int
    peak_mb: float
    seconds: float
    longest_tokens: int | None = None


@dataclass
class Calibration:
    points: list[SizePoint]
    warm_mb: float  # RSS after the warm-up step: weights, data, optimizer state
    warmup_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def calibration_sizes(batch_size: int) -> list[int]:
    """Two micro-batch sizes around the recipe's: (b/2, b), or (1, 2) for b = 1 (ascending)."""
    return [max(1, batch_size // 2), batch_size] if batch_size > 1 else [1, 2]


def pooled_indices(batches: list[np.ndarray], size: int, skip: int = 0) -> np.ndarray:
    """`size` example indices in the run's order, starting after `skip` of them (wrapping around)."""
    flat = np.concatenate(batches)
    return np.take(flat, np.arange(skip, skip + size), mode="wrap")


def longest_indices(task: Task, size: int, batches: list[np.ndarray]) -> np.ndarray:
    """The `size` longest training examples when the task knows its lengths, else its first batch."""
    lengths = task.train_lengths()
    if lengths is None:
        return pooled_indices(batches, size)
    return np.argsort(-np.asarray(lengths), kind="stable")[:size]


def calibrate(model: torch.nn.Module, task: Task, precision: Precision, device: torch.device,
              prefix_cache=None, sizes: list[int] | None = None) -> Calibration:
    """Measure micro-steps at each size (ascending); leaves the model trained by those few steps, so
    `tunelab plan` runs it in its own process, never inside a run."""
    cfg = task.config.train
    sizes = sizes or calibration_sizes(cfg.batch_size)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, 10_000, cfg)
    scaler = precision.grad_scaler()
    trainable = [p for p in model.parameters() if p.requires_grad]
    batches = task.train_batches(epoch_rng(cfg.seed, 0))
    model.train()
    step = 0

    def micro_step(index: np.ndarray) -> float:
        nonlocal step
        started = time.perf_counter()
        accumulate(model, task, [index], step, precision, scaler, device, prefix_cache)
        optimizer_step(optimizer, scheduler, scaler, trainable, cfg.clip)
        step += 1
        return time.perf_counter() - started

    warmup = micro_step(pooled_indices(batches, sizes[0]))
    warm_mb = current_rss_mb()
    points = []
    for size in sizes:
        longest = longest_indices(task, size, batches)
        with sampled_peak() as peak:
            micro_step(longest)
        seconds = [micro_step(pooled_indices(batches, size, skip=size * (i + 1))) for i in range(TIMED_STEPS)]
        lengths = task.train_lengths()
        points.append(SizePoint(size, peak.mb, float(np.mean(seconds)),
                                int(np.asarray(lengths)[longest].max()) if lengths is not None else None))
    return Calibration(points, warm_mb, warmup)
