"""Run a recipe: one training run, or one per named variant followed by a comparison.

This is the glue between config, assets, task, adapters and the loop; the CLI and the Python API
both call `run_recipe`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunelab.adapters.budget import check_budget, trainable_breakdown
from tunelab.adapters.inject import inject_adapters, num_heads_of
from tunelab.adapters.spec import AdapterConfig
from tunelab.assets.models import cache_root
from tunelab.config import RunConfig
from tunelab.errors import TunelabError
from tunelab.models.artifact import save_run_artifact
from tunelab.models.fast_dropout import use_fast_dropout
from tunelab.models.heads import head_patterns_in
from tunelab.models.init_from import artifact_kind, carry_adapters, init_artifact, load_scratch_weights
from tunelab.models.source import ModelSource
from tunelab.plan.device_memory import lifetime_peak_mb, on_cuda, reserved_peak_mb
from tunelab.plan.record import predicted_vs_measured
from tunelab.plan.rss import process_peak_mb
from tunelab.progress import console
from tunelab.recipes import config_to_dict, with_overrides
from tunelab.rundir import RunDir, atomic_write_json, new_run_id
from tunelab.tasks.registry import task_class
from tunelab.train.distributed import FollowerRunDir, is_main, ranks, share
from tunelab.train.loop import check_metric, train
from tunelab.train.precision import choose_precision, default_device, precision_reason
from tunelab.train.prefix_cache import FrozenPrefixCache, build_prefix_cache


@dataclass
class RunOutcome:
    label: str
    run_dir: Path
    summary: dict[str, Any]


def quiet_transformers() -> None:
    """Our own bars and one-line messages replace transformers' load reports and tqdm bars. A run of a
    from-scratch model never imports transformers (0.4 s of its start-up), so when it is not loaded yet the
    environment variables it and huggingface_hub read at import say the same (a user's own setting wins)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    elif "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def run_recipe(config: RunConfig, resume: Path | None = None, root: Path | None = None,
               on_eval=None) -> list[RunOutcome]:
    """Train every variant of the recipe (or the recipe itself) and return their summaries.

    `on_eval(step, metrics) -> stop?` is called after each periodic evaluation (sweeps prune with it)."""
    quiet_transformers()
    ranks()  # under torchrun: join the process group now, so only rank 0 prints from here on
    root = Path(root or config.output_dir)
    if config.stages:
        return run_stages(config, resume, root, on_eval)
    if not config.variants:
        return [run_single(config, config.name, root / config.name, resume, on_eval=on_eval)]
    group_dir = share(Path(resume) if resume else root / config.name / new_run_id())  # one folder for all ranks
    outcomes = []
    for done, (label, overrides) in enumerate(config.variants.items()):
        variant = with_overrides(config, overrides, source=f"variants.{label}")
        existing = group_dir / label
        outcomes.append(run_single(variant, label, group_dir, existing if resume and existing.is_dir() else None,
                                   run_id=label, on_eval=on_eval))
        left = len(config.variants) - done - 1
        if left:  # the next variants reuse the shared prefix cache: count the last run without it
            last = outcomes[-1].summary
            per_variant = last.get("wall_seconds", 0.0) - last.get("prefix_cache_seconds", 0.0)
            console.print(f"{done + 1}/{len(config.variants)} variants done; the other {left} take about "
                          f"{format_seconds(per_variant * left)} more")
    return outcomes


def run_stages(config: RunConfig, resume: Path | None, root: Path, on_eval=None) -> list[RunOutcome]:
    """Run the stage chain in order, each stage from the previous stage's run folder (`tunelab.stages`);
    then, when `compare_prompts` is set, compare the base and every stage on that prompt set."""
    from tunelab.stages import CHAIN_FILE, stage_config, stage_names

    group_dir = share(Path(resume) if resume else root / config.name / new_run_id())  # one folder for all ranks
    names = stage_names(config)
    main = is_main()
    if main:
        group_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(group_dir / CHAIN_FILE, {"recipe": config.name, "base": config.model.name,
                                                   "stages": names})
    outcomes: list[RunOutcome] = []
    for index, name in enumerate(names):
        init_from = str(outcomes[-1].run_dir) if outcomes else None
        stage = stage_config(config, index, init_from, source=f"recipe {config.name}")
        existing = group_dir / name
        console.print(f"[bold]stage {index + 1}/{len(names)}[/]: {name} ({stage.task})"
                      + (f", from {outcomes[-1].label}" if outcomes else ""))
        outcomes.append(run_single(stage, name, group_dir, existing if resume and existing.is_dir() else None,
                                   run_id=name, on_eval=on_eval))
    if config.compare_prompts and main:
        compare_stages(config, outcomes, group_dir)
    return outcomes


def compare_stages(config: RunConfig, outcomes: list[RunOutcome], group_dir: Path) -> None:
    """`tunelab eval` of the base and every stage on config.compare_prompts, into group_dir/stage_eval."""
    from tunelab.eval.generation import GenerationSettings
    from tunelab.eval.suite import evaluate_models

    out_dir = group_dir / "stage_eval"
    if (out_dir / "eval_summary.json").is_file():
        return
    specs = [f"base={config.model.name}"] + [f"{o.label}={o.run_dir}" for o in outcomes]
    settings = GenerationSettings(max_new_tokens=config.eval.max_new_tokens, batch_size=min(config.eval.batch_size, 16),
                                  system=config.data.system)
    evaluate_models(config.compare_prompts, specs, out_dir, settings, limit=config.compare_limit)
    console.print(f"stage comparison (per-prompt perplexity, BLEU, refusals): {out_dir}")


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def prepare_model(config: RunConfig, task, source: ModelSource, enforce_budget: bool = True,
                  ) -> tuple[torch.nn.Module, dict[str, Any], AdapterConfig]:
    """Build the task's model, attach adapters per `adapter:` (plan, budget), or set up full /
    head-only training when `adapter.variant` is none. Returns the model, its trainable-parameter
    breakdown and the adapter config as applied (head patterns filled in: what the artifact must record)."""
    torch.manual_seed(config.train.seed)
    model = task.build_model(source)
    adapter = config.adapter
    if source.kind == "scratch":  # nothing pretrained to keep frozen: every weight trains
        if "adapter" in config.model_fields_set and adapter.variant != "none":
            raise TunelabError("adapter: a from-scratch model (model.arch) trains all its weights; "
                               "remove the adapter section or set adapter.variant: none")
        adapter = adapter.model_copy(update={"variant": "none"})
    if not adapter.trainable_extra:
        names = [name for name, _ in model.named_parameters()]
        adapter = adapter.model_copy(update={"trainable_extra": head_patterns_in(names)})
    if adapter.variant == "none" and config.model.init_from:
        start_full_model(model, config.model.init_from, source)
    if adapter.variant == "none" and config.train.head_only:
        for name, param in model.named_parameters():
            param.requires_grad = any(re.search(p, name) for p in adapter.trainable_extra)
    elif adapter.variant != "none":
        if config.model.init_from and artifact_kind(init_artifact(config.model.init_from)) == "adapter":
            carry_adapters(model, config.model.init_from, source.fingerprint, adapter)
        else:
            inject_adapters(model, adapter, num_heads_of(model), enforce_budget=enforce_budget)

    breakdown = trainable_breakdown(model, adapter)
    if enforce_budget:
        check_budget(model, adapter)
    return model, breakdown, adapter


def start_full_model(model: torch.nn.Module, init_from: str, source: ModelSource) -> None:
    """Every weight trains and starts from `init_from`: a from-scratch model loads its safetensors; a
    pretrained one was already built from the earlier run's saved folder (`model_source_for`)."""
    kind = artifact_kind(init_artifact(init_from))
    if source.kind == "scratch":
        load_scratch_weights(model, init_from)
    elif kind == "adapter":
        raise TunelabError(f"model.init_from: {init_from} trained adapters; continue them with the same adapter "
                           "settings (full fine-tuning on top of adapters is not supported)")


def load_task(config: RunConfig):
    """Build the task, check eval.metric, find its model source (resolving and loading a pretrained
    tokenizer, or none for a from-scratch model) and read + tokenise its data (cached)."""
    task = task_class(config.task)(config)
    check_metric(task, config.eval.metric or task.default_metric)
    source = task.model_source()
    task.prepare_data(source.tokenizer, source.tokenizer_id, cache_root() / "tokens")
    task.preflight_report = task.preflight()
    if task.preflight_report is not None:
        task.preflight_report.raise_errors()
    if source.tokenizer is None:  # from scratch: the task built its tokenizer from the data
        source.tokenizer = getattr(task, "tokenizer", None)
    return source, task


def place_model(model: torch.nn.Module, device: torch.device, fast_dropout: bool = False) -> torch.nn.Module:
    """Move to the device, unless a quantised load already placed it (a device map forbids .to()); with
    `fast_dropout` on a CPU, swap in the cheap dropout (a third of a BERT-style LoRA step went to drawing
    torch's masks; tunelab.models.fast_dropout). `tunelab plan` places its model the same way."""
    from tunelab.models.placement import is_device_mapped

    if not is_device_mapped(model):
        model.to(device)
    if fast_dropout and device.type == "cpu":
        use_fast_dropout(model)
    return model


def run_single(config: RunConfig, label: str, parent: Path, resume: Path | None = None,
               run_id: str | None = None, on_eval=None) -> RunOutcome:
    if resume is not None and RunDir(Path(resume)).summary() is not None:
        return RunOutcome(label, Path(resume), RunDir(Path(resume)).summary())  # finished before the interruption
    started = time.perf_counter()
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    source, task = load_task(config)
    model, breakdown, applied = prepare_model(config, task, source)
    if task.preflight_report is not None:  # printed once the model is built: a config error stays one line
        task.preflight_report.print(full=False)
    group = ranks()  # None in one process; under torchrun rank 0 owns the run folder
    device = group.device if group else default_device()
    place_model(model, device, config.train.fast_dropout)
    precision = choose_precision(config.train.precision, device)
    if group is None or group.main:
        run = RunDir(Path(resume)) if resume else RunDir.create(parent, "", run_id)
        run.write_config(config_to_dict(config), seed=config.train.seed)
    if group is not None:  # every rank learns rank 0's folder; the others only read it
        path = share(run.path if group.main else None)
        if not group.main:
            run = FollowerRunDir(path)
    what = (f"{config.adapter.variant} on {config.model.name}" if source.kind == "pretrained"
            else f"from scratch ({config.model.arch.get('type')})")
    console.print(f"[bold]{label}[/]: {what}, {breakdown['trainable']:,} trainable / {breakdown['total']:,} params, "
                  f"{task.train_size} train rows -> {run.path}")
    console.print(f"precision: {precision.name} ({precision_reason(precision, config.train.precision)})")
    cache_started = time.perf_counter()
    prefix_cache = build_cache(model, task, source, config, precision)
    cache_seconds = time.perf_counter() - cache_started
    def rebuild() -> torch.nn.Module:  # a plain copy for FSDP's gathered weights (same build, same adapters)
        return place_model(prepare_model(config, task, source, enforce_budget=False)[0], device)

    result = train(model, task, config.train, run, precision, device, resume=resume is not None,
                   metric=config.eval.metric or task.default_metric, prefix_cache=prefix_cache, on_eval=on_eval,
                   rebuild=rebuild)
    model = result.model if result.model is not None else model
    if group is not None and not group.main:
        return RunOutcome(label, run.path, {})  # rank 0 writes the artifact and the summary
    save_run_artifact(model, task, source, applied, run.path)
    if applied.variant != "none":
        from tunelab.adapters.introspect import adapter_stats, plot_scale_heatmap, write_adapter_stats

        write_adapter_stats(model, run.path / "adapter_stats.json")
        plot_scale_heatmap(adapter_stats(model), run.path / "adapter_heatmap.png")
    summary = {
        "label": label, "recipe": config.name, "task": config.task, "model": config.model.name,
        "variant": applied.variant, "precision": precision.name, "device": str(device),
        "trainable_params": breakdown["trainable"], "total_params": breakdown["total"],
        "params": breakdown, "metric": config.eval.metric or task.default_metric, "metrics": result.metrics,
        "steps": result.steps, "best_step": result.best_step,
        "stopped_early": result.stopped_early, "train_samples": result.samples, "train_tokens": result.tokens,
        "samples_per_s": round(result.samples_per_s, 2), "tokens_per_s": round(result.tokens_per_s, 1),
        "train_seconds": round(result.train_seconds, 2), "wall_seconds": round(time.perf_counter() - started, 2),
        "prefix_cache_seconds": round(cache_seconds, 2),
        "peak_rss_mb": round(process_peak_mb(), 1), "processes": group.world if group else 1,
        "step_seconds": round(result.steady_step_seconds, 4) if result.steady_step_seconds else None,
        "eval_seconds": round(result.periodic_eval_seconds + result.final_eval_seconds, 2),
        "evaluations": result.periodic_evals + 1,
    }
    if on_cuda(device):
        summary["peak_cuda_allocated_mb"] = round(lifetime_peak_mb(device), 1)
        summary["peak_cuda_reserved_mb"] = round(reserved_peak_mb(device), 1)
    measured_peak = summary.get("peak_cuda_allocated_mb", summary["peak_rss_mb"])
    planned = predicted_vs_measured(config, measured_peak, result.steady_step_seconds,
                                    result.periodic_eval_seconds + result.final_eval_seconds,
                                    result.train_seconds)
    if planned is not None:
        summary["plan"] = planned
    run.write_summary(summary)
    return RunOutcome(label, run.path, summary)


def build_cache(model: torch.nn.Module, task, source: ModelSource, config: RunConfig,
                precision) -> FrozenPrefixCache | None:
    """Frozen-prefix cache of the train and eval splits when the bottom layers are frozen; shared by the
    variants of one recipe that sit on the same base, data and precision."""
    inputs = task.prefix_inputs()
    if not config.train.frozen_prefix_cache or config.train.fsdp or inputs is None:  # FSDP runs every layer
        return None
    share_key = json.dumps([source.fingerprint, task.name, config.data.model_dump(mode="json"),
                            config.model.max_length, precision.name], sort_keys=True)
    cache = build_prefix_cache(model, *inputs, precision.autocast, int(config.train.prefix_cache_max_gb * 2**30),
                               share_key, eval_inputs=task.prefix_inputs("eval"))
    if cache is not None:
        console.print(f"frozen-prefix cache: layers 0-{cache.k - 1} computed once ({cache.nbytes / 2**20:.0f} MiB)")
    return cache
