"""What the run's evaluations will cost: one periodic and one final evaluation, timed before training.

A run evaluates every `train.eval_every` steps (metrics only) and once at the end (metrics plus what only
the final evaluation computes: generated replies, code scoring, the base model's scores, sample text,
prediction files). Their cost depends on the eval set and, where the model generates, on the replies,
so no formula predicts it; the plan runs both the way the run will (`task.evaluate`, the run's autocast
and frozen-prefix cache, the final one writing into a scratch folder) and times them:

    ETA = steps x t_step + n_periodic x t_periodic + t_final,   n_periodic = floor(steps / eval_every)

Both are timed on the model after its few calibration steps: where replies end at EOS, a trained model's
may be shorter or longer than these, so for generating tasks this part of the ETA is the roughest.
Memory: what an evaluation adds over the RSS it started from (its activations, generation caches,
plots) is sampled; in the run it comes on top of the weights, data and optimizer state (the training
activations are freed by then and their memory reused), so the planner predicts an evaluation's peak as
(RSS after the warm-up step) + that addition.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tunelab.plan.device_memory import current_mb, sampled_peak, synchronize
from tunelab.tasks.base import Task
from tunelab.train.loop import eval_prefix
from tunelab.train.precision import Precision


@dataclass
class EvalCost:
    periodic_seconds: float | None  # None when the recipe has no periodic evaluations
    final_seconds: float
    extra_mb: float  # the most either evaluation raised RSS above where it started


def periodic_evaluations(steps: int, eval_every: int | None) -> int:
    """How many periodic evaluations a run of `steps` optimizer steps makes (at steps eval_every, 2·eval_every, ...)."""
    return steps // eval_every if eval_every else 0


def time_evaluations(model: torch.nn.Module, task: Task, precision: Precision, device: torch.device,
                     eval_every: int | None, prefix_cache=None) -> EvalCost:
    """Run the evaluations the run will make (a periodic one only when the recipe has them) and time each."""
    prefix = eval_prefix(prefix_cache, device)

    def timed(out_dir: Path | None) -> tuple[float, float]:
        """(seconds, MB the evaluation raised memory above where it started)."""
        before = current_mb(device)
        with sampled_peak(device) as sampled:
            started = time.perf_counter()
            task.evaluate(model, out_dir, precision.autocast, prefix)
            synchronize(device)
            seconds = time.perf_counter() - started
        return seconds, sampled.mb - before

    periodic, extra = timed(None) if eval_every else (None, 0.0)
    with tempfile.TemporaryDirectory(prefix="tunelab-plan-") as scratch:
        final, final_extra = timed(Path(scratch))
    model.train()
    return EvalCost(periodic, final, max(extra, final_extra, 0.0))
