"""Plans on disk, and predicted vs measured in a run's summary.

A plan is stored under the tunelab cache, keyed by a hash of every setting that shapes a training step
(the recipe without its name, description and output folder), so the run of the same settings finds it.
After training, the run writes `plan` into summary.json:

    {"predicted_peak_mb", "measured_peak_mb", "peak_error", "predicted_step_s", "measured_step_s",
     "step_error", "predicted_eval_s", "measured_eval_s", "eval_error", "predicted_total_s",
     "measured_total_s", "total_error"}      error = predicted / measured − 1

(eval: every evaluation together; total: training plus evaluations, what the plan's ETA counts; the
eval and total pairs only when the plan timed the evaluations.)

Measured peak is the run process's highest RSS (ru_maxrss) on the CPU, its highest allocated GPU memory
(torch.cuda.max_memory_allocated) on CUDA: for the second variant of a recipe run in one
process it includes what the first one reached. Measured step time is the mean after the first few steps
(the same steady state the calibration times).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tunelab.assets.models import cache_root
from tunelab.rundir import atomic_write_json

IGNORED = ("name", "description", "output_dir", "variants")


def plan_key(config) -> str:
    from tunelab.recipes import config_to_dict

    settings = {k: v for k, v in config_to_dict(config).items() if k not in IGNORED}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:20]


def plan_path(config) -> Path:
    return cache_root() / "plans" / f"{plan_key(config)}.json"


def save_plan(config, plan, description: str) -> Path:
    path = plan_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {**plan.as_dict(), "description": description})
    return path


def stored_plan(config) -> dict[str, Any] | None:
    path = plan_path(config)
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None  # a damaged plan is no plan: the run does not depend on it


def predicted_vs_measured(config, measured_peak_mb: float, measured_step_s: float | None,
                          measured_eval_s: float | None = None, measured_train_s: float | None = None
                          ) -> dict[str, Any] | None:
    """The summary's `plan` block, or None when no plan of these settings was made."""
    plan = stored_plan(config)
    if plan is None:
        return None
    predicted = plan["configured"]
    block: dict[str, Any] = {"predicted_peak_mb": round(predicted["peak_mb"], 1),
                             "measured_peak_mb": round(measured_peak_mb, 1),
                             "peak_error": round(predicted["peak_mb"] / measured_peak_mb - 1, 4)}
    if measured_step_s:
        block.update(predicted_step_s=round(predicted["step_seconds"], 4), measured_step_s=round(measured_step_s, 4),
                     step_error=round(predicted["step_seconds"] / measured_step_s - 1, 4))
    if plan.get("eval_seconds") is not None and measured_eval_s:
        block.update(pair("eval", plan["eval_seconds"], measured_eval_s))
        if measured_train_s:
            as_written = plan["steps"] * predicted["step_seconds"] + plan["eval_seconds"]  # the run's own setting
            block.update(pair("total", as_written, measured_train_s + measured_eval_s))
    return block


def pair(name: str, predicted: float, measured: float) -> dict[str, float]:
    return {f"predicted_{name}_s": round(predicted, 3), f"measured_{name}_s": round(measured, 3),
            f"{name}_error": round(predicted / measured - 1, 4)}
