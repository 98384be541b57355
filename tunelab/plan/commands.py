"""`tunelab plan RECIPE [--memory 8GB] [--time 30m]`: predicted peak memory and step time before a run,
from the model, the data and a calibration of a few real micro-steps; the micro-batch x accumulation
that fits a memory limit, and the run's ETA (training steps plus its evaluations, each timed once). The
plan is stored under the cache (keyed by the recipe's settings), and a later `tunelab run` of the same
settings writes predicted beside measured into its summary.json (`tunelab.plan.record`).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.rundir import atomic_write_text

UNITS_MB = {"": 1.0, "m": 1.0, "mb": 1.0, "mib": 1.0, "g": 1024.0, "gb": 1024.0, "gib": 1024.0,
            "t": 1024.0**2, "tb": 1024.0**2}
UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_memory(text: str) -> float:
    """'8GB', '8g', '512MB', '6.5GiB' -> MB (binary units either way)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in UNITS_MB:
        raise argparse.ArgumentTypeError(f"--memory: expected a size such as 8GB or 512MB (got {text!r})")
    return float(match.group(1)) * UNITS_MB[match.group(2).lower()]


def parse_duration(text: str) -> float:
    """'30m', '2h', '90s', '1h30m' -> seconds."""
    parts = re.findall(r"([0-9.]+)\s*([smh])", text.strip().lower())
    if not parts or re.sub(r"[0-9.]+\s*[smh]", "", text.strip().lower()).strip():
        raise argparse.ArgumentTypeError(f"--time: expected a duration such as 30m, 2h or 1h30m (got {text!r})")
    return sum(float(value) * UNITS_S[unit] for value, unit in parts)


def plan_config(args: argparse.Namespace):
    """The recipe (one variant of it with --variant; the first stage of a chain)."""
    from tunelab.recipes import load_recipe, with_overrides

    config = load_recipe(args.recipe, args.overrides)
    if config.stages:
        from tunelab.stages import stage_config

        return stage_config(config, 0)
    if args.variant:
        if args.variant not in config.variants:
            raise TunelabError(f"--variant: {args.variant!r} is not a variant of {args.recipe} "
                               f"(variants: {', '.join(config.variants) or 'none'})")
        return with_overrides(config, config.variants[args.variant], source=f"variants.{args.variant}")
    return config


def cmd_plan(args: argparse.Namespace) -> int:
    import torch

    from tunelab.plan.calibrate import calibrate
    from tunelab.plan.device_memory import lifetime_peak_mb, memory_name
    from tunelab.plan.eval_cost import time_evaluations
    from tunelab.plan.planner import make_plan
    from tunelab.plan.record import save_plan
    from tunelab.plan.report import print_plan
    from tunelab.runner import build_cache, load_task, place_model, prepare_model, quiet_transformers
    from tunelab.train.loop import total_steps_for
    from tunelab.train.precision import choose_precision, default_device

    quiet_transformers()
    config = plan_config(args)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    source, task = load_task(config)
    task.persist_model_outputs = False
    model, _, _ = prepare_model(config, task, source)
    device = default_device()
    place_model(model, device, config.train.fast_dropout)
    precision = choose_precision(config.train.precision, device)
    prefix_cache = build_cache(model, task, source, config, precision)
    import tunelab.report.plots  # noqa: F401 (a run ends with plots and a report: matplotlib's memory is in its peak)

    loading_peak = lifetime_peak_mb(device)
    cfg = config.train
    calibration = calibrate(model, task, precision, device, prefix_cache, steps=total_steps_for(task, cfg))
    evals = None if args.no_eval else time_evaluations(model, task, precision, device, cfg.eval_every, prefix_cache)
    plan = make_plan(config.name, calibration, cfg.batch_size, cfg.grad_accum, total_steps_for(task, cfg),
                     loading_peak, args.memory, args.time, cfg.gradient_checkpointing, evals, cfg.eval_every)
    fallback = None
    if plan.chosen is None and args.memory is not None and not cfg.gradient_checkpointing and \
            config.task in ("sft", "dpo") and not args.no_fallback:
        fallback = plan_with_checkpointing(args)
    description = f"{config.task}, {config.model.name or 'from scratch'}, {config.adapter.variant}, " \
                  f"{device.type} {precision.name}, {torch.get_num_threads()} threads, memory: {memory_name(device)}"
    print_plan(plan, description, fallback)
    path = save_plan(config, plan, description)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(plan.as_dict(), indent=1) + "\n")
    print(f"plan stored: {path} (a `tunelab run` with the same settings records predicted vs measured)")
    return 0


def plan_with_checkpointing(args: argparse.Namespace) -> dict | None:
    """The same plan with train.gradient_checkpointing=true, in a fresh process (its memory is its own)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "plan.json"
        command = [sys.executable, "-m", "tunelab", "plan", args.recipe, *args.overrides,
                   "train.gradient_checkpointing=true", "--memory", f"{args.memory}MB", "--no-fallback",
                   "--json", str(out)] + (["--variant", args.variant] if args.variant else []) + \
                  (["--no-eval"] if args.no_eval else [])
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        return json.loads(out.read_text()) if done.returncode == 0 and out.is_file() else None



def add_parsers(verbs) -> None:
    plan = verbs.add_parser("plan", help="predict peak memory, step time and ETA of a recipe (a few calibration "
                                         "steps), and the micro-batch x accumulation that fits --memory")
    plan.add_argument("recipe", help="YAML recipe")
    plan.add_argument("overrides", nargs="*", help="dotted overrides, as for tunelab run")
    plan.add_argument("--memory", type=parse_memory, metavar="SIZE", help="memory to fit in, e.g. 8GB (RSS on the CPU, "
                      "PyTorch's allocated memory on a GPU)")
    plan.add_argument("--time", type=parse_duration, metavar="DURATION", help="time to finish in, e.g. 30m")
    plan.add_argument("--variant", help="plan this variant of the recipe (default: the recipe as written)")
    plan.add_argument("--json", metavar="FILE", help="also write the plan as JSON")
    plan.add_argument("--no-eval", action="store_true", help="do not time the evaluations (they can take long: "
                                                             "generation); the ETA then counts training only")
    plan.add_argument("--no-fallback", action="store_true", help=argparse.SUPPRESS)
    plan.set_defaults(handler=cmd_plan)
