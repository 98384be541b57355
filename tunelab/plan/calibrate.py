"""Calibration: a few real training micro-steps of the recipe, measured.

Memory and time of a step are not guessed from a formula alone: the same code the run will execute
(task batches, autocast, forward, backward, optimizer step) runs on this machine for two micro-batch
sizes b1 < b2 and is measured. Per size:

- memory: one micro-step on the b longest training examples (the worst padding the run will meet), its
  peak memory (RSS on the CPU, sampled; PyTorch's allocated GPU memory on CUDA: `tunelab.plan.device_memory`);
- time: micro-steps on batches of the run's own epoch (spread over it), their mean wall time: at least
  MIN_TIMED_STEPS and until MIN_TIMED_SECONDS have passed (at most MAX_TIMED_STEPS), so a cheap step is
  averaged over enough repeats that timer and scheduler noise fall below a few per cent. Where
  the task pads batches to their longest member, the run's batches differ in length, so the time is
  scaled by (the mean padded tokens of the micro-batches the run will take) / (the timed batches'
  padded tokens): work grows with the tokens a step processes, and the batch order is a pure function
  of (seed, epoch), so the plan knows the run's batches (for a short run, not the epoch's average).

One warm-up step comes first (kernels, allocator, the optimizer's state), and the smaller size is
measured first, so memory the allocator kept from a larger step does not inflate the smaller one.
Both are then fitted by lines in b (`tunelab.plan.planner`): activations and work grow with the
examples in a micro-batch, while weights, optimizer state and per-step overheads do not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from tunelab.plan.device_memory import current_mb, sampled_peak, synchronize
from tunelab.tasks.base import Task
from tunelab.train.batching import epoch_rng
from tunelab.train.loop import accumulate, optimizer_step
from tunelab.train.optim import build_optimizer, build_scheduler
from tunelab.train.precision import Precision

MIN_TIMED_STEPS = 4  # micro-steps timed per size, after the memory step ...
MIN_TIMED_SECONDS = 6.0  # ... and until this much time has been measured ...
MAX_TIMED_STEPS = 32  # ... but never more than this many


@dataclass
class SizePoint:
    """What one micro-batch size cost: peak memory (MB) on the longest examples, seconds per micro-step."""

    size: int
    peak_mb: float
    seconds: float
    longest_tokens: int | None = None


@dataclass
class Calibration:
    points: list[SizePoint]
    warm_mb: float  # memory after the warm-up step: weights, data, optimizer state
    warmup_seconds: float


def calibration_sizes(batch_size: int) -> list[int]:
    """Two micro-batch sizes around the recipe's: (b/2, b), or (1, 2) for b = 1 (ascending)."""
    return [max(1, batch_size // 2), batch_size] if batch_size > 1 else [1, 2]


def pooled_indices(batches: list[np.ndarray], size: int, skip: int = 0) -> np.ndarray:
    """`size` example indices in the run's order, starting after `skip` of them (wrapping around)."""
    flat = np.concatenate(batches)
    return np.take(flat, np.arange(skip, skip + size), mode="wrap")


def spread_order(count: int) -> list[int]:
    """0..count-1 in bit-reversed order (0, count/2, count/4, 3count/4, ...): every prefix is spread
    over the whole range, so stopping after any number of timed steps still samples the whole epoch."""
    bits = max(1, (count - 1).bit_length())
    return sorted(range(count), key=lambda i: int(format(i, f"0{bits}b")[::-1], 2))


def timing_indices(batches: list[np.ndarray], size: int, number: int, count: int) -> np.ndarray:
    """The `number`-th of `count` micro-batches spread over the epoch, cut (or pooled) to `size`."""
    position = int(len(batches) * (number + 0.5) / count) % len(batches)
    batch = batches[position]
    return batch[:size] if len(batch) >= size else pooled_indices(batches[position:] + batches[:position], size)


def padded_tokens(lengths: np.ndarray, index: np.ndarray) -> int:
    return int(len(index) * lengths[index].max())


def typical_padded_tokens(lengths: np.ndarray, batches: list[np.ndarray], size: int) -> float:
    """Mean padded tokens of a micro-batch of `size` over `batches`: size x their mean longest member."""
    return size * float(np.mean([lengths[b].max() for b in batches if len(b)]))


RUN_EPOCHS_READ = 3  # the run's batches are read from at most this many epochs (later ones are alike)


def run_batches(task: Task, seed: int, micro_batches: int) -> list[np.ndarray]:
    """The first `micro_batches` micro-batches the run will train on, in its order (epochs in turn)."""
    taken: list[np.ndarray] = []
    for epoch in range(RUN_EPOCHS_READ):
        taken += task.train_batches(epoch_rng(seed, epoch))
        if len(taken) >= micro_batches:
            break
    return taken[:max(1, micro_batches)]


def longest_indices(lengths: np.ndarray | None, size: int, batches: list[np.ndarray]) -> np.ndarray:
    """The `size` longest training examples when the task knows its lengths, else its first batch."""
    if lengths is None:
        return pooled_indices(batches, size)
    return np.argsort(-lengths, kind="stable")[:size]


def calibrate(model: torch.nn.Module, task: Task, precision: Precision, device: torch.device,
              prefix_cache=None, sizes: list[int] | None = None, steps: int | None = None) -> Calibration:
    """Measure micro-steps at each size (ascending); leaves the model trained by those few steps, so
    `tunelab plan` runs it in its own process, never inside a run. `steps`: the run's optimizer steps
    (whose batches set the length scaling; default one epoch)."""
    cfg = task.config.train
    sizes = sizes or calibration_sizes(cfg.batch_size)
    optimizer = build_optimizer(model, cfg, steps or 10_000)
    scheduler = build_scheduler(optimizer, 10_000, cfg)
    scaler = precision.grad_scaler()
    trainable = [p for p in model.parameters() if p.requires_grad]
    batches = task.train_batches(epoch_rng(cfg.seed, 0))
    lengths = None if task.train_lengths() is None else np.asarray(task.train_lengths())
    ahead = batches if steps is None or lengths is None else run_batches(task, cfg.seed, steps * cfg.grad_accum)
    model.train()
    step = 0

    def micro_step(index: np.ndarray) -> float:
        nonlocal step
        started = time.perf_counter()
        accumulate(model, task, [index], step, precision, scaler, device, prefix_cache)
        optimizer_step(optimizer, scheduler, scaler, trainable, cfg.clip)
        synchronize(device)
        step += 1
        return time.perf_counter() - started

    warmup = micro_step(pooled_indices(batches, sizes[0]))
    warm_mb = current_mb(device)
    points = []
    for size in sizes:
        longest = longest_indices(lengths, size, batches)
        with sampled_peak(device) as peak:
            micro_step(longest)
        timed, times = [], []
        for number in spread_order(MAX_TIMED_STEPS):
            if len(times) >= MIN_TIMED_STEPS and sum(times) >= MIN_TIMED_SECONDS:
                break
            timed.append(timing_indices(batches, size, number, MAX_TIMED_STEPS))
            times.append(micro_step(timed[-1]))
        seconds = float(np.mean(times))
        longest_tokens = None
        if lengths is not None:
            timed_tokens = np.mean([padded_tokens(lengths, index) for index in timed])
            seconds *= typical_padded_tokens(lengths, ahead, size) / timed_tokens
            longest_tokens = int(lengths[longest].max())
        points.append(SizePoint(size, peak.mb, seconds, longest_tokens))
    return Calibration(points, warm_mb, warmup)
