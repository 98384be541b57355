"""Sweep spaces: which dotted keys vary and over what values, and how one point becomes a RunConfig.

A parameter is either a list of choices (`adapter.rank=[4,8,16]`, usable by grid and Optuna) or a
range (`train.lr={low: 1e-5, high: 1e-3, log: true}`, Optuna only). Keys are the recipe's dotted keys;
a number indexes into a list, so `adapter.layers.1.rank` is the rank of the second per-layer rule
(seed 004's per-layer search). A recipe's `variants:` become one more axis named `variant`.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from tunelab.config import RunConfig
from tunelab.errors import TunelabError
from tunelab.recipes import config_to_dict, parse_override, validate

VARIANT_KEY = "variant"
PRIMITIVE = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Param:
    """One axis of the space: `choices` (categorical) or `low`..`high` (a numeric range)."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def is_range(self) -> bool:
        return self.choices is None

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step or 1))

    def encoded_choices(self) -> list[Any]:
        """Optuna stores only primitives; lists (e.g. target modules) travel as JSON text."""
        return [self.encode(v) for v in self.choices or ()]

    def encode(self, value: Any) -> Any:
        return value if isinstance(value, PRIMITIVE) else json.dumps(value)

    def decode(self, value: Any) -> Any:
        if self.choices is not None and not isinstance(self.choices[self.encoded_choices().index(value)], PRIMITIVE):
            return json.loads(value)
        return value

    def suggest(self, trial) -> Any:
        """Ask an Optuna trial for this parameter (an enqueued trial returns its fixed value)."""
        if not self.is_range:
            return self.decode(trial.suggest_categorical(self.name, self.encoded_choices()))
        if self.is_int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def first(self) -> Any:
        return self.low if self.is_range else self.choices[0]

    def describe(self) -> dict[str, Any]:
        if not self.is_range:
            return {"name": self.name, "choices": list(self.choices)}
        return {"name": self.name, "low": self.low, "high": self.high, "log": self.log, "step": self.step}


def numbers(value: Any) -> Any:
    """YAML 1.1 reads '1e-4' as text, also inside lists and mappings; users mean a float."""
    if isinstance(value, list):
        return [numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items()}
    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()):
        return float(value)
    return value


def param_from_value(name: str, value: Any) -> Param:
    """`[a, b]` -> choices; `{low, high, log?, step?}` -> range; a scalar -> one fixed choice."""
    value = numbers(value)
    if isinstance(value, list):
        if not value:
            raise TunelabError(f"sweep parameter {name}: empty list of values")
        return Param(name, choices=tuple(value))
    if isinstance(value, dict):
        unknown = set(value) - {"low", "high", "log", "step"}
        if unknown or not {"low", "high"} <= set(value):
            raise TunelabError(f"sweep parameter {name}: a range is {{low: .., high: .., log: true?, step: ..?}} "
                               f"(got keys {sorted(value)})")
        low, high = value["low"], value["high"]
        if not all(isinstance(v, int | float) for v in (low, high)) or low >= high:
            raise TunelabError(f"sweep parameter {name}: need numbers with low < high (got {low!r}, {high!r})")
        return Param(name, low=low, high=high, log=bool(value.get("log", False)), step=value.get("step"))
    return Param(name, choices=(value,))


def parse_param(text: str) -> Param:
    """`--grid 'adapter.rank=[4,8,16]'` or `--param 'train.lr={low: 1e-5, high: 1e-3, log: true}'`."""
    parts, value = parse_override(text)
    return param_from_value(".".join(parts), value)


def params_from_mapping(space: dict[str, Any]) -> list[Param]:
    return [param_from_value(str(name), value) for name, value in space.items()]


def expand_grid(params: list[Param]) -> list[dict[str, Any]]:
    """Every combination, the last parameter varying fastest (like nested for-loops in flag order)."""
    ranges = [p.name for p in params if p.is_range]
    if ranges:
        raise TunelabError(f"grid search needs lists of values; {', '.join(ranges)} is a range "
                           "(use --search optuna, or give a list)")
    names = [p.name for p in params]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(p.choices for p in params))]


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """raw[a][b][1][c] = value for key 'a.b.1.c'; numbers index lists, missing sections are created."""
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise TunelabError(f"sweep parameter {key}: {'.'.join(parts[:i])} has {len(node)} entries "
                                   f"(index with 0..{len(node) - 1})")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise TunelabError(f"sweep parameter {key}: '{where}' is not a section")


def trial_config(base: RunConfig, values: dict[str, Any], source: str = "sweep") -> RunConfig:
    """The base recipe with one point of the space applied (a named variant first, then the keys)."""
    raw = copy.deepcopy(config_to_dict(base))
    variants = raw.pop("variants", {}) or {}
    if VARIANT_KEY in values:
        if values[VARIANT_KEY] not in variants:
            raise TunelabError(f"{source}: variant {values[VARIANT_KEY]!r} is not one of the recipe's variants "
                               f"({', '.join(variants) or 'none'})")
        for key, value in variants[values[VARIANT_KEY]].items():
            set_dotted(raw, key, value)
    for key, value in values.items():
        if key != VARIANT_KEY:
            set_dotted(raw, key, value)
    return validate(raw, source=source)


def full_space(base: RunConfig, params: list[Param]) -> list[Param]:
    """The user's parameters plus the recipe's variants as an axis (first, so they vary slowest)."""
    if not base.variants or any(p.name == VARIANT_KEY for p in params):
        return list(params)
    return [Param(VARIANT_KEY, choices=tuple(base.variants)), *params]


def check_space(base: RunConfig, params: list[Param], points: list[dict[str, Any]] | None = None) -> None:
    """Fail before any training when a point of the space is not a valid recipe (wrong key, bad value)."""
    if not params:
        raise TunelabError("nothing to sweep: give --grid KEY=[...] / --param KEY=SPEC, or a .sweep.yaml space")
    names = [p.name for p in params]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise TunelabError(f"sweep parameter given twice: {', '.join(duplicated)}")
    for point in points or [{p.name: p.first() for p in params}]:
        trial_config(base, point, source=f"sweep point {point}")
