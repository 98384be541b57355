"""The training loop every task uses. Read it top to bottom:

    for each optimizer step:
        accumulate grad_accum micro-batches (autocast; each mean loss weighted by its share of the
            step's loss items, so the step's loss is the exact mean over all of them; backward)
        clip, step, schedule, zero grads
        every log_every steps: append a line to metrics.jsonl
        every eval_every steps: evaluate, keep the best weights, maybe stop early, checkpoint
    final evaluation (of the best weights when evals ran)

Batch order is a pure function of (seed, epoch) (`epoch_rng`), and checkpoints hold the buffers and
every RNG state (torch, Python, numpy, the task's generators), so a resumed run replays exactly the
batches, augmentations and dropout masks an uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from tunelab.config import TrainConfig
from tunelab.errors import TunelabError
from tunelab.eval.direction import lower_is_better
from tunelab.progress import console, progress_bar
from tunelab.rundir import RunDir
from tunelab.tasks.base import Task
from tunelab.train.batching import epoch_rng
from tunelab.train.checkpoint import (
    load_best,
    load_checkpoint,
    load_rank_states,
    model_state,
    save_best,
    save_checkpoint,
)
from tunelab.train.distributed import DataParallel, data_parallel, ranks, share
from tunelab.train.optim import build_optimizer, build_scheduler
from tunelab.train.out_of_memory import out_of_memory_as_error
from tunelab.train.precision import Precision
from tunelab.train.prefix_cache import FrozenPrefixCache


@dataclass
class TrainResult:
    metrics: dict[str, Any]
    steps: int
    samples: int
    tokens: int
    train_seconds: float
    best_step: int | None
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    steady_from: tuple[int, float] | None = None  # (step, seconds) once the first steps' one-off costs are paid
    periodic_evals: int = 0
    periodic_eval_seconds: float = 0.0  # all periodic evaluations together (not in train_seconds)
    final_eval_seconds: float = 0.0
    model: nn.Module | None = None  # the trained model as saved (rank 0)

    @property
    def steady_step_seconds(self) -> float | None:
        """Mean seconds per optimizer step after the first ETA_AFTER_STEPS (None for shorter runs)."""
        if self.steady_from is None or self.steps <= self.steady_from[0]:
            return None
        return (self.train_seconds - self.steady_from[1]) / (self.steps - self.steady_from[0])


def total_steps_for(task: Task, cfg: TrainConfig) -> int:
    steps_per_epoch = math.ceil(len(task.train_batches(epoch_rng(cfg.seed, 0))) / cfg.grad_accum)
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))


def fresh_position() -> dict[str, Any]:
    return {"step": 0, "epoch": 0, "batch": 0, "best": None, "best_step": None, "bad_evals": 0,
            "samples": 0, "tokens": 0, "train_seconds": 0.0, "stopped_early": False, "bad_steps": 0,
            "evals": 0, "eval_seconds": 0.0}


def train(model: nn.Module, task: Task, cfg: TrainConfig, run: RunDir, precision: Precision,
          device: torch.device, resume: bool = False, metric: str = "accuracy",
          prefix_cache: FrozenPrefixCache | None = None,
          on_eval: Callable[[int, dict[str, Any]], bool] | None = None,
          rebuild: Callable[[], nn.Module] | None = None) -> TrainResult:
    """`on_eval(step, metrics) -> stop?` lets a sweep prune a trial from its intermediate evals.
    `rebuild()` makes a fresh copy of the model (FSDP gathers the trained weights into it at the end).
    The result's `model` is the trained model to save (that copy under FSDP, else `model` itself)."""
    check_metric(task, metric)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    group = ranks()  # None in one process; under torchrun this rank's place (tunelab.train.distributed)
    parallel = data_parallel(model, task, group, cfg.seed, cfg.fsdp) if group else None
    main = group is None or group.main  # rank 0 evaluates and writes; the others follow its decisions
    total_steps = total_steps_for(task, cfg)
    optimizer = build_optimizer(model, cfg, total_steps)
    scheduler = build_scheduler(optimizer, total_steps, cfg)
    scaler = precision.grad_scaler()
    trainable = [p for p in model.parameters() if p.requires_grad]
    position = fresh_position()
    if resume and (run.path / "checkpoints" / "last").exists():
        position = load_checkpoint(run.path / "checkpoints" / "last", model, optimizer, scheduler, scaler,
                                   task.generators, parallel.place if parallel else None)
        if parallel:
            parallel.restore_rank_state(load_rank_states(run.path / "checkpoints" / "last"), task.generators)
        run.truncate_metrics(position["step"])
    elif resume:  # killed before its first checkpoint: said aloud, and the lines it logged are dropped
        console.print(f"{run.path}: no checkpoint yet, so training starts again from step 0")
        run.truncate_metrics(0)
    eval_every = cfg.eval_every
    first_step, first_seconds = position["step"], position["train_seconds"]
    model.train()
    with progress_bar("training", total=total_steps) as bar:
        bar.advance(position["step"])
        while position["step"] < total_steps and not position["stopped_early"]:
            batches = task.train_batches(epoch_rng(cfg.seed, position["epoch"]))
            while position["batch"] < len(batches) and position["step"] < total_steps:
                group = batches[position["batch"]: position["batch"] + cfg.grad_accum]
                started = time.perf_counter()
                loss, logged = accumulate(model, task, group, position["step"], precision, scaler, device,
                                          prefix_cache, parallel)
                applied = optimizer_step(optimizer, scheduler, scaler, trainable, cfg.clip)
                count_skipped(position, applied, loss, cfg, run)
                position["train_seconds"] += time.perf_counter() - started
                position["step"] += 1
                position["batch"] += len(group)
                position["samples"] += sum(task.batch_samples(b) for b in group)
                position["tokens"] += logged.pop("tokens")
                bar.advance(1, status=f"loss {loss:.4f}")
                if position["step"] == first_step + ETA_AFTER_STEPS:
                    announce_eta(position, first_step, first_seconds, total_steps)
                    position["steady_from"] = [position["step"], position["train_seconds"]]
                if position["step"] % cfg.log_every == 0 or position["step"] == total_steps:
                    run.log({"step": position["step"], "epoch": position["epoch"], "loss": loss,
                             "lr": scheduler.get_last_lr()[0], **logged})
                if eval_every and position["step"] % eval_every == 0:
                    if main or parallel.every_rank_evaluates:  # FSDP: every rank gathers its layers' weights
                        metrics = periodic_eval(model, task, run, position, cfg, metric, precision, prefix_cache,
                                                device, parallel)
                        if main and on_eval is not None and on_eval(position["step"], metrics):
                            position["stopped_early"] = True
                    position = share(position)  # best step and early stop as rank 0 decided
                if checkpoint_due(position["step"], cfg):
                    snapshot = parallel.snapshot(model, optimizer, task.generators) if parallel else None
                    if main:
                        save_checkpoint(run.path / "checkpoints" / "last", model, optimizer, scheduler, scaler,
                                        position, task.generators, snapshot)
                if position["stopped_early"]:
                    break
            if position["batch"] >= len(batches):
                position["epoch"] += 1
                position["batch"] = 0
    if parallel is not None:  # FSDP: the full weights gathered into a plain model on rank 0
        model = parallel.final_model(model, rebuild)
    if not main:  # the final evaluation and every file are rank 0's
        return TrainResult(metrics={}, steps=position["step"], samples=position["samples"],
                           tokens=position["tokens"], train_seconds=position["train_seconds"],
                           best_step=position["best_step"], stopped_early=position["stopped_early"])
    return finish(model, task, run, position, precision, prefix_cache, device)


ETA_AFTER_STEPS = 3  # the first step pays one-off costs (allocator, kernels); three give a fair rate


def announce_eta(position: dict[str, Any], first_step: int, first_seconds: float, total_steps: int) -> None:
    """One line with the measured step time and the training time left, printed once, early."""
    per_step = (position["train_seconds"] - first_seconds) / max(1, position["step"] - first_step)
    left = per_step * (total_steps - position["step"])
    console.print(f"{per_step:.2f} s/step over the first steps: about {left / 60:.1f} min of training left "
                  f"({total_steps - position['step']} steps, evaluations not included)")


def checkpoint_due(step: int, cfg: TrainConfig) -> bool:
    every = cfg.checkpoint_every or cfg.eval_every
    return bool(every) and step % every == 0


def check_metric(task: Task, metric: str) -> None:
    """eval.metric must be something periodic evaluations produce, or the first eval would fail mid-run."""
    produced = task.periodic_metrics()
    if metric not in produced:
        raise TunelabError(f"eval.metric: {metric!r} is not a metric the {task.name} task reports during "
                           f"training; choose one of: {', '.join(produced)}")


def draw_batch(model: nn.Module, task: Task, index, step: int, device: torch.device,
               parallel: DataParallel | None = None) -> dict[str, torch.Tensor]:
    """The micro-batch on the device; batches built from the current model (rollouts) are made under
    no_grad in eval mode (no dropout while sampling), then the model goes back to training. Under
    torchrun the model work runs the way the parallel wrapper needs (FSDP: its weights gathered)."""
    def make(current: nn.Module) -> dict[str, torch.Tensor]:
        return task.make_batch(current, index, step)

    if task.batches_need_model:
        model.eval()
        with torch.no_grad():
            batch = parallel.outside_loss(make) if parallel else make(model)
        model.train()
    else:
        batch = parallel.outside_loss(make) if parallel else make(model)
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def accumulate(model: nn.Module, task: Task, group: list, step: int, precision: Precision, scaler,
               device: torch.device, prefix_cache: FrozenPrefixCache | None = None,
               parallel: DataParallel | None = None) -> tuple[float, dict[str, float]]:
    """Forward/backward over the micro-batches of one optimizer step.

    Each micro-batch j returns the mean loss_j over its w_j items; scaling it by w_j / Σw makes the
    accumulated gradient that of  Σ_j w_j · loss_j / Σ_j w_j,  the mean over every item of the step,
    whatever the micro-batch sizes or lengths. Logged scalars are averaged with the same weights.
    Under torchrun each rank takes its share of the micro-batches and Σw, the loss and the logged
    scalars are summed over ranks (tunelab.train.distributed).
    Running out of memory in a forward/backward is one TunelabError naming the settings to lower.
    Returns (step loss, weighted mean of the logged scalars plus "tokens")."""
    mine = parallel.shard(group) if parallel else [(index, 1.0) for index in group]
    batches = [draw_batch(model, task, index, step, device, parallel) for index, _ in mine]
    weights = [task.loss_weight(batch) * keep for batch, (_, keep) in zip(batches, mine, strict=True)]
    total_weight = (parallel.sum([sum(weights)])[0] if parallel else sum(weights)) or 1.0
    ranks_scale = parallel.world if parallel else 1  # DDP averages gradients over the ranks
    step_loss, tokens, logged = 0.0, 0.0, {}
    for j, ((index, keep), batch, weight) in enumerate(zip(mine, batches, weights, strict=True)):
        cached = prefix_cache.active(index, device) if prefix_cache else contextlib.nullcontext()
        synced = parallel.sync(last=j == len(batches) - 1) if parallel else contextlib.nullcontext()
        share = weight / total_weight
        with out_of_memory_as_error(step + 1, batch, task.config), synced:  # one line naming what to lower
            with cached, precision.autocast():
                loss, scalars = parallel.loss(batch) if parallel else task.loss_fn(model, batch)
            scaled = loss * (share * ranks_scale)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        step_loss += float(loss.detach()) * share
        for key, value in scalars.items():
            logged[key] = logged.get(key, 0.0) + float(value) * share
        tokens += task.batch_tokens(batch) * keep
    if parallel:
        keys = sorted(logged)
        step_loss, tokens, *values = parallel.sum([step_loss, tokens, *(logged[k] for k in keys)])
        logged = dict(zip(keys, values, strict=True))
    return step_loss, {**logged, "tokens": int(round(tokens))}


def optimizer_step(optimizer, scheduler, scaler, trainable: list[torch.Tensor], clip: float | None) -> bool:
    """Clip and step; False when the gradients held NaN/inf and the update was skipped. With fp16 the
    grad scaler skips such steps itself (and lowers its scale); otherwise the gradient norm is checked
    here, so one overflowing batch does not write NaN into every weight. The schedule advances either way,
    so a resumed run stays in step with an uninterrupted one."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(trainable, clip if clip is not None else float("inf"))
    finite = bool(torch.isfinite(norm))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    elif finite:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return finite


def count_skipped(position: dict[str, Any], applied: bool, loss: float, cfg: TrainConfig, run: RunDir) -> None:
    """Warn on a step with a NaN/inf loss or gradients; stop with one line after `train.nan_patience` in a row."""
    if applied and math.isfinite(loss):
        position["bad_steps"] = 0
        return
    position["bad_steps"] = position.get("bad_steps", 0) + 1
    step = position["step"] + 1
    console.print(f"[yellow]step {step}: the loss or gradients are NaN/inf; update skipped "
                  f"({position['bad_steps']} in a row)[/]")
    run.log({"step": step, "warning": "non-finite loss or gradients: update skipped"})
    if position["bad_steps"] >= cfg.nan_patience:
        raise TunelabError(f"train: the loss or gradients were NaN/inf for {position['bad_steps']} steps in a row "
                           f"(up to step {step}); lower train.lr, set train.clip, or use train.precision=fp32")


def periodic_eval(model: nn.Module, task: Task, run: RunDir, position: dict[str, Any], cfg: TrainConfig,
                  metric: str, precision: Precision, prefix_cache: FrozenPrefixCache | None,
                  device: torch.device, parallel: DataParallel | None = None) -> dict[str, Any]:
    """Evaluate, keep the best weights on disk, count evals without improvement for early stopping.
    Under torchrun the ranks that evaluate (rank 0; every rank under FSDP) call it, rank 0 writes."""
    started = time.perf_counter()

    def evaluate(current: nn.Module) -> dict[str, Any]:
        return task.evaluate(current, None, precision.autocast, eval_prefix(prefix_cache, device))

    metrics = parallel.evaluate(evaluate) if parallel else evaluate(model)
    model.train()
    position["evals"] = position.get("evals", 0) + 1  # a checkpoint of an older version lacks the two
    position["eval_seconds"] = position.get("eval_seconds", 0.0) + time.perf_counter() - started
    value = float(metrics[metric])
    run.log({"step": position["step"], "tokens": position["tokens"],  # the budget spent: compare --by
             "train_seconds": round(position["train_seconds"], 3),
             "eval": {k: v for k, v in metrics.items() if isinstance(v, float)}})
    best = position["best"]
    better = best is None or (value < best if lower_is_better(metric) else value > best)
    if better:
        position.update(best=value, best_step=position["step"], bad_evals=0)
        state = parallel.full_state(model) if parallel else model_state(model)  # FSDP: gathered on every rank
        if parallel is None or parallel.group.main:
            save_best(run.path / "checkpoints" / "best", state)
    else:
        position["bad_evals"] += 1
        if cfg.early_stopping and position["bad_evals"] >= cfg.early_stopping:
            position["stopped_early"] = True
    return metrics


def eval_prefix(prefix_cache: FrozenPrefixCache | None, device: torch.device):
    return prefix_cache.eval_prefix(device) if prefix_cache is not None else None


def finish(model: nn.Module, task: Task, run: RunDir, position: dict[str, Any], precision: Precision,
           prefix_cache: FrozenPrefixCache | None, device: torch.device) -> TrainResult:
    """Final evaluation, on the best weights if periodic evals found a better step than the last."""
    if position["best_step"] is not None and position["best_step"] != position["step"]:
        load_best(run.path / "checkpoints" / "best", model)
    started = time.perf_counter()
    metrics = task.evaluate(model, run.path, precision.autocast, eval_prefix(prefix_cache, device))
    final_eval_seconds = time.perf_counter() - started
    model.eval()
    return TrainResult(model=model, metrics=metrics, steps=position["step"], samples=position["samples"],
                       tokens=position["tokens"], train_seconds=position["train_seconds"],
                       best_step=position["best_step"] or position["step"], stopped_early=position["stopped_early"],
                       history=run.metrics(),
                       steady_from=tuple(position["steady_from"]) if position.get("steady_from") else None,
                       periodic_evals=position.get("evals", 0), periodic_eval_seconds=position.get("eval_seconds", 0.0),
                       final_eval_seconds=final_eval_seconds)
