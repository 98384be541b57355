"""Run a recipe: one training run, or one per named variant followed by a comparison.

This is the glue between config, assets, task, adapters and the loop; the CLI and the Python API
both call `run_recipe`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunelab.adapters.budget import check_budget, trainable_breakdown
from tunelab.adapters.inject import inject_adapters, num_heads_of
from tunelab.adapters.spec import AdapterConfig
from tunelab.assets.models import cache_root, load_tokenizer, resolve_model
from tunelab.config import RunConfig
from tunelab.progress import console
from tunelab.recipes import config_to_dict, with_overrides
from tunelab.rundir import RunDir, atomic_write_dir, new_run_id
from tunelab.tasks import TASKS
from tunelab.train.loop import train
from tunelab.train.precision import choose_precision, default_device
from tunelab.train.prefix_cache import FrozenPrefixCache, build_prefix_cache

HEAD_PATTERNS = [r"(^|\.)classifier(\.|$)", r"(^|\.)pre_classifier(\.|$)", r"(^|\.)score(\.|$)"]


@dataclass
class RunOutcome:
    label: str
    run_dir: Path
    summary: dict[str, Any]


def quiet_transformers() -> None:
    """Our own bars and one-line messages replace transformers' load reports and tqdm bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def run_recipe(config: RunConfig, resume: Path | None = None, root: Path | None = None,
               on_eval=None) -> list[RunOutcome]:
    """Train every variant of the recipe (or the recipe itself) and return their summaries.

    `on_eval(step, metrics) -> stop?` is called after each periodic evaluation (sweeps prune with it)."""
    quiet_transformers()
    root = Path(root or config.output_dir)
    if not config.variants:
        return [run_single(config, config.name, root / config.name, resume, on_eval=on_eval)]
    group_dir = Path(resume) if resume else root / config.name / new_run_id()
    outcomes = []
    for label, overrides in config.variants.items():
        variant = with_overrides(config, overrides, source=f"variants.{label}")
        existing = group_dir / label
        outcomes.append(run_single(variant, label, group_dir, existing if resume else None, run_id=label,
                                   on_eval=on_eval))
    return outcomes


def head_patterns(model: torch.nn.Module) -> list[str]:
    """The task-head patterns that exist in this model (classifier, pre_classifier, score)."""
    names = [name for name, _ in model.named_parameters()]
    return [p for p in HEAD_PATTERNS if any(re.search(p, name) for name in names)]


def prepare_model(config: RunConfig, task, model_path: Path, enforce_budget: bool = True,
                  ) -> tuple[torch.nn.Module, dict[str, Any], AdapterConfig]:
    """Load the model with its head, attach adapters per `adapter:` (plan, budget), or set up full /
    head-only training when `adapter.variant` is none. Returns the model, its trainable-parameter
    breakdown and the adapter config as applied (head patterns filled in: what the artifact must record)."""
    torch.manual_seed(config.train.seed)
    model = task.build_model(model_path)
    adapter = config.adapter
    if not adapter.trainable_extra:
        adapter = adapter.model_copy(update={"trainable_extra": head_patterns(model)})
    if adapter.variant == "none" and config.train.head_only:
        for name, param in model.named_parameters():
            param.requires_grad = any(re.search(p, name) for p in adapter.trainable_extra)
    elif adapter.variant != "none":
        inject_adapters(model, adapter, num_heads_of(model), enforce_budget=enforce_budget)
    breakdown = trainable_breakdown(model, adapter)
    if enforce_budget:
        check_budget(model, adapter)
    return model, breakdown, adapter


def load_task(config: RunConfig):
    """Resolve the model, load its tokenizer, build the task and read + tokenise its data (cached)."""
    resolved = resolve_model(config.model.name, config.model.revision)
    tokenizer = load_tokenizer(resolved)
    task = TASKS[config.task](config)
    task.prepare_data(tokenizer, resolved.fingerprint, cache_root() / "tokens")
    return resolved, tokenizer, task


def run_single(config: RunConfig, label: str, parent: Path, resume: Path | None = None,
               run_id: str | None = None, on_eval=None) -> RunOutcome:
    if resume is not None and RunDir(Path(resume)).summary() is not None:
        return RunOutcome(label, Path(resume), RunDir(Path(resume)).summary())  # finished before the interruption
    started = time.perf_counter()
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    resolved, tokenizer, task = load_task(config)
    model, breakdown, applied = prepare_model(config, task, resolved.path)
    device = default_device()
    model.to(device)
    precision = choose_precision(config.train.precision, device)
    run = RunDir(Path(resume)) if resume else RunDir.create(parent, "", run_id)
    run.write_config(config_to_dict(config), seed=config.train.seed)
    console.print(f"[bold]{label}[/]: {config.adapter.variant} on {config.model.name}, "
                  f"{breakdown['trainable']:,} trainable / {breakdown['total']:,} params, {precision.name}, "
                  f"{task.train_size} train rows -> {run.path}")
    prefix_cache = build_cache(model, task, config, precision)
    result = train(model, task, config.train, run, precision, device, resume=resume is not None,
                   metric=config.eval.metric or task.default_metric, prefix_cache=prefix_cache, on_eval=on_eval)
    save_artifact(model, config, applied, resolved, run.path / "artifact", tokenizer)
    summary = {
        "label": label, "recipe": config.name, "task": config.task, "model": config.model.name,
        "variant": config.adapter.variant, "precision": precision.name, "device": str(device),
        "trainable_params": breakdown["trainable"], "total_params": breakdown["total"],
        "params": breakdown, "metric": config.eval.metric or task.default_metric, "metrics": result.metrics,
        "steps": result.steps, "best_step": result.best_step,
        "stopped_early": result.stopped_early, "train_samples": result.samples,
        "samples_per_s": round(result.samples_per_s, 2), "tokens_per_s": round(result.tokens_per_s, 1),
        "train_seconds": round(result.train_seconds, 2), "wall_seconds": round(time.perf_counter() - started, 2),
    }
    run.write_summary(summary)
    return RunOutcome(label, run.path, summary)


def build_cache(model: torch.nn.Module, task, config: RunConfig, precision) -> FrozenPrefixCache | None:
    """Frozen-prefix cache when the bottom layers are frozen and it pays (more than one pass over the data)."""
    inputs = task.prefix_inputs()
    if not config.train.frozen_prefix_cache or inputs is None:
        return None
    cache = build_prefix_cache(model, *inputs, precision.autocast, int(config.train.prefix_cache_max_gb * 2**30))
    if cache is not None:
        console.print(f"frozen-prefix cache: layers 0-{cache.k - 1} computed once ({cache.nbytes / 2**20:.0f} MiB)")
    return cache


def save_artifact(model: torch.nn.Module, config: RunConfig, applied: AdapterConfig, resolved, out_dir: Path,
                  tokenizer) -> None:
    """Adapters + head as safetensors with the base named; a full fine-tune saves the whole model."""
    base = {"name": config.model.name, "revision": config.model.revision, "fingerprint": resolved.fingerprint}
    if config.adapter.variant == "none":
        def write(tmp: Path) -> None:
            model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))

        atomic_write_dir(out_dir, write)
        return
    from tunelab.adapters.artifact import save_adapter
    from tunelab.adapters.introspect import adapter_stats, plot_scale_heatmap, write_adapter_stats

    save_adapter(model, applied, base, out_dir)
    write_adapter_stats(model, out_dir.parent / "adapter_stats.json")
    plot_scale_heatmap(adapter_stats(model), out_dir.parent / "adapter_heatmap.png")
