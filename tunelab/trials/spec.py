"""What a sweep is: recipe + overrides + space + search settings, from CLI flags and/or a `.sweep.yaml`.

The sweep's folder and Optuna study are named from a hash of everything that defines the experiment
(the resolved recipe, the space, search, seed, metric) but not the trial count or storage, so running
the same command again resumes the same sweep, `--trials` can grow it, and every worker on every
machine that runs the same command joins the same study.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from tunelab.config import RunConfig
from tunelab.errors import TunelabError
from tunelab.recipes import config_to_dict, load_recipe, read_yaml
from tunelab.report.compare import lower_is_better
from tunelab.tasks.registry import default_metric
from tunelab.trials.space import Param, full_space, params_from_mapping

SWEEP_FILE_KEYS = {"search", "trials", "metric", "direction", "seed", "prune", "space"}
Search = Literal["grid", "optuna"]


@dataclass(frozen=True)
class SweepSpec:
    """A sweep as the user gave it. `storage` is a SQLAlchemy URL; None = SQLite in the sweep folder."""

    recipe: str
    overrides: tuple[str, ...] = ()
    params: tuple[Param, ...] = ()
    search: Search | None = None
    trials: int | None = None
    metric: str | None = None
    direction: Literal["maximize", "minimize"] | None = None
    seed: int | None = None
    prune: bool | None = None
    name: str | None = None
    storage: str | None = None
    tracker: str | None = None
    root: str | None = None
    space_file: str | None = None


def companion_sweep_file(recipe: str | Path) -> Path | None:
    """configs/x.yaml -> configs/x.sweep.yaml when it exists (the recipe's documented search space)."""
    path = Path(recipe)
    candidate = path.with_name(path.stem + ".sweep.yaml")
    return candidate if candidate.is_file() and candidate != path else None


def read_sweep_file(path: str | Path) -> dict[str, Any]:
    """A `.sweep.yaml`: {search, trials, metric, direction, seed, prune, space: {dotted.key: values}}."""
    raw = read_yaml(path)
    unknown = sorted(set(raw) - SWEEP_FILE_KEYS)
    if unknown:
        raise TunelabError(f"{path}: {unknown[0]}: unknown key (valid keys: {', '.join(sorted(SWEEP_FILE_KEYS))})")
    if not isinstance(raw.get("space", {}), dict):
        raise TunelabError(f"{path}: space: must map dotted keys to value lists or ranges")
    return raw


def merge_sweep_file(spec: SweepSpec, path: str | Path) -> SweepSpec:
    """Values from the file fill what the command line left unset; CLI parameters replace file ones."""
    raw = read_sweep_file(path)
    given = {p.name for p in spec.params}
    file_params = [p for p in params_from_mapping(raw.get("space") or {}) if p.name not in given]
    unset = {key: raw[key] for key in ("search", "trials", "metric", "direction", "seed", "prune")
             if key in raw and getattr(spec, key) is None}
    return replace(spec, params=tuple(file_params) + spec.params, **unset)


@dataclass(frozen=True)
class ResolvedSweep:
    """Everything a worker needs: the base config, the full space, and where results go."""

    spec: SweepSpec
    space_file: Path | None
    base: RunConfig
    params: list[Param]
    search: Search
    metric: str
    direction: Literal["maximize", "minimize"]
    folder: Path
    study_name: str
    storage_url: str


def resolve(spec: SweepSpec) -> ResolvedSweep:
    """Apply the sweep file (explicit, or the recipe's companion), pick defaults, name the sweep."""
    space_file = Path(spec.space_file) if spec.space_file else companion_sweep_file(spec.recipe)
    if space_file is not None:
        spec = merge_sweep_file(spec, space_file)
    spec = replace(spec, seed=spec.seed or 0, prune=True if spec.prune is None else spec.prune)
    base = load_recipe(spec.recipe, list(spec.overrides))
    params = full_space(base, list(spec.params))
    search: Search = spec.search or ("optuna" if spec.trials or any(p.is_range for p in params) else "grid")
    if search not in ("grid", "optuna"):
        raise TunelabError(f"--search {search}: choose grid or optuna")
    if search == "optuna" and not spec.trials:
        raise TunelabError("--search optuna needs --trials N (or trials: in the .sweep.yaml)")
    if search == "grid" and spec.trials:
        raise TunelabError("--trials applies to --search optuna; a grid runs every combination once")
    metric = spec.metric or base.eval.metric or default_metric(base.task)
    direction = spec.direction or ("minimize" if lower_is_better(metric) else "maximize")
    name = spec.name or sweep_hash(base, params, search, spec.seed, metric, direction)
    root = Path(spec.root or base.output_dir)
    folder = root / base.name / f"sweep-{name}"
    storage = spec.storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    return ResolvedSweep(spec, space_file, base, params, search, metric, direction, folder,
                         f"{base.name}/{name}", storage)


def sweep_hash(base: RunConfig, params: list[Param], search: str, seed: int, metric: str, direction: str) -> str:
    config = config_to_dict(base)
    config.pop("output_dir", None)
    identity = {"config": config, "space": [p.describe() for p in params], "search": search, "seed": seed,
                "metric": metric, "direction": direction}
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]


def redacted(url: str) -> str:
    """The storage URL without its password, for logs and sweep.json."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by Optuna itself later
        return url.split("@")[-1]


def describe(sweep: ResolvedSweep) -> dict[str, Any]:
    """What sweep.json records: enough to read the sweep back without the command line."""
    spec = sweep.spec
    return {"recipe": spec.recipe, "overrides": list(spec.overrides), "search": sweep.search,
            "trials": spec.trials, "metric": sweep.metric, "direction": sweep.direction, "seed": spec.seed,
            "prune": spec.prune, "study": sweep.study_name, "storage": redacted(sweep.storage_url),
            "space_file": str(sweep.space_file) if sweep.space_file else None,
            "space": [p.describe() for p in sweep.params]}
