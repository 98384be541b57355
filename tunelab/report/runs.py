"""Read finished runs back from disk: `tunelab compare` and `tunelab report` take run dirs, sweep or
variant-group folders, or globs, and see each run as a `RunRecord` (summary, flattened config, history).

Nothing here knows a task: metrics are whatever scalar values summary.json's `metrics` holds.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import TunelabError
from tunelab.rundir import read_jsonl
from tunelab.tasks.registry import default_metric

SKIP_DIRS = {"artifact", "checkpoints", "tensorboard", "mlruns", "code_eval"}  # code_eval/*/summary.json: not runs


@dataclass
class RunRecord:
    """One finished run: where it is, what it reported, how it was configured."""

    label: str
    path: Path
    summary: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def flat_config(self) -> dict[str, Any]:
        return flatten(self.config)

    @property
    def metrics(self) -> dict[str, float]:
        """The scalar metrics (a confusion matrix or per-class lists are not table cells)."""
        return {k: v for k, v in self.summary.get("metrics", {}).items() if is_number(v)}

    @property
    def best_metric(self) -> str | None:
        """The metric the run selected its best checkpoint by: the recipe's eval.metric or the task's default."""
        named = self.summary.get("metric") or (self.config.get("eval") or {}).get("metric")
        return named or default_metric(self.summary.get("task") or self.config.get("task"))

    @cached_property
    def history(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "metrics.jsonl")

    @cached_property
    def trial(self) -> dict[str, Any]:
        """trial.json of a sweep trial ({slot, number, state, value, params}); {} for a plain run."""
        path = self.path / "trial.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values (targets, per-layer rules)."""
    flat: dict[str, Any] = {}
    for key, value in (config or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def load_record(run_dir: Path, label: str | None = None) -> RunRecord:
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    return RunRecord(label or str(summary.get("label") or run_dir.name), run_dir, summary, config or {})


def records_from_outcomes(outcomes) -> list[RunRecord]:
    """RunOutcome (label, run_dir, summary) from the runner -> records, config read from the run dir."""
    records = []
    for outcome in outcomes:
        record = load_record(outcome.run_dir, outcome.label) if (Path(outcome.run_dir) / "summary.json").exists() \
            else RunRecord(outcome.label, Path(outcome.run_dir), outcome.summary)
        record.summary = outcome.summary
        records.append(record)
    return records


def run_dirs_under(path: Path) -> list[Path]:
    """A run dir itself, or every run dir below a folder (a sweep, a variant group, a recipe's runs)."""
    if (path / "summary.json").is_file():
        return [path]
    if path.name == "summary.json" and path.is_file():
        return [path.parent]
    found = []
    for summary in path.rglob("summary.json"):
        parts = summary.relative_to(path).parts[:-1]
        if not SKIP_DIRS & set(parts) and not any(".replaced-" in part for part in parts):
            found.append(summary.parent)  # (a sweep moves a run dir aside as trial-k.replaced-<time>)
    return sorted(found)


def find_runs(patterns: list[str]) -> list[RunRecord]:
    """Expand paths and globs into records; labels made unique by their shortest distinguishing path."""
    dirs: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        hits = [d for match in matches if Path(match).exists() for d in run_dirs_under(Path(match))]
        if not hits:
            raise TunelabError(f"{pattern}: no finished runs (no summary.json) found")
        dirs += [d for d in hits if d.resolve() not in {x.resolve() for x in dirs}]
    records = [load_record(d) for d in dirs]
    unique_labels(records)
    return records


def unique_labels(records: list[RunRecord]) -> None:
    """Two runs both called 'demo' (or two sweeps' 'trial-000') get enough parent folders to tell apart."""
    for depth in range(0, 6):
        labels = [r.label if depth == 0 else "/".join(r.path.resolve().parts[-depth - 1:]) for r in records]
        if len(set(labels)) == len(labels):
            for record, label in zip(records, labels, strict=True):
                record.label = label
            return
