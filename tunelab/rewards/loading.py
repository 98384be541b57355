"""Resolve the recipe's reward terms to callables and score completions with them, checked.

A term names a built-in (`tunelab.rewards.builtin`), an importable 'package.module:function', or a file
'path/to/rewards.py:function' (resolved against the recipe's working directory). The total reward is
    r = Σ_k w_k · reward_k(prompts, completions, **columns, **args_k)
A reward that raises, returns the wrong number of values, or a value that is not a finite number stops
the run with one line naming the function and the example (its row in the split).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import TunelabError
from tunelab.rewards.builtin import BUILTIN_REWARDS

RewardFn = Callable[..., Sequence[float]]


@dataclass(frozen=True)
class Reward:
    label: str  # what error lines and logs call it
    fn: RewardFn
    weight: float
    args: dict[str, Any]


def load_function(name: str, key: str) -> RewardFn:
    """A built-in name, 'module:function' or 'file.py:function'; anything else is one line naming `key`."""
    if name in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[name]
    target, sep, attr = name.rpartition(":")
    if not sep or not target or not attr:
        raise TunelabError(f"{key}: {name!r} is neither a built-in reward ({', '.join(BUILTIN_REWARDS)}) nor "
                           "'module:function' / 'file.py:function'")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise TunelabError(f"{key}: reward file {target} does not exist")
        spec = importlib.util.spec_from_file_location(f"tunelab_reward_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # noqa: BLE001 (user code: any failure becomes one line)
            raise TunelabError(f"{key}: importing {target} failed: {type(error).__name__}: {error}") from None
    else:
        try:
            module = importlib.import_module(target)
        except Exception as error:  # noqa: BLE001
            raise TunelabError(f"{key}: cannot import module {target!r}: {type(error).__name__}: {error}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise TunelabError(f"{key}: {target} has no function {attr!r}")
    return fn


def load_rewards(specs: Sequence[Any]) -> list[Reward]:
    if not specs:
        raise TunelabError("grpo.rewards: give at least one reward")
    rewards = []
    for i, spec in enumerate(specs):
        fn = load_function(spec.name, f"grpo.rewards.{i}.name")
        check_args(fn, spec.args, f"grpo.rewards.{i}.args")
        rewards.append(Reward(spec.name, fn, spec.weight, dict(spec.args)))
    return rewards


def check_args(fn: RewardFn, args: dict[str, Any], key: str) -> None:
    """Settings the function cannot take are a config error now, not a crash at the first rollout. The
    built-ins absorb dataset columns with **_, so their settings are checked against their named ones."""
    params = inspect.signature(fn).parameters
    builtin = fn in BUILTIN_REWARDS.values()
    if not builtin and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    named = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD} - {"prompts", "completions"}
    unknown = sorted(set(args) - named)
    if unknown:
        accepted = ", ".join(sorted(named)) or "none"
        raise TunelabError(f"{key}: {', '.join(unknown)} not accepted by the reward function (accepted: {accepted})")


def score(rewards: Sequence[Reward], prompts: list[str], completions: list[str], columns: dict[str, list[Any]],
          rows: Sequence[int]) -> tuple[np.ndarray, dict[str, float]]:
    """(weighted total per completion (N,), mean of each term); `rows[i]` is completion i's example row."""
    total = np.zeros(len(completions), dtype=np.float64)
    means: dict[str, float] = {}
    for reward in rewards:
        values = call_reward(reward, prompts, completions, columns, rows)
        total += reward.weight * values
        means[f"reward/{reward.label}"] = float(values.mean()) if len(values) else 0.0
    return total, means


def call_reward(reward: Reward, prompts: list[str], completions: list[str], columns: dict[str, list[Any]],
                rows: Sequence[int]) -> np.ndarray:
    try:
        values = reward.fn(prompts, completions, **columns, **reward.args)
    except Exception as error:  # noqa: BLE001 (user code)
        row = first_failing_row(reward, prompts, completions, columns, rows)
        where = f"example row {row}" if row is not None else f"the batch of rows {list(rows)[:4]}"
        raise TunelabError(f"reward {reward.label} raised {type(error).__name__}: {error} (on {where})") from None
    try:
        values = np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError):
        raise TunelabError(f"reward {reward.label} must return a list of numbers, got {type(values).__name__} "
                           f"(on rows {list(rows)[:4]})") from None
    if values.shape != (len(completions),):
        raise TunelabError(f"reward {reward.label} returned {values.size} values for {len(completions)} "
                           f"completions (on rows {list(rows)[:4]})")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise TunelabError(f"reward {reward.label} returned {values[bad[0]]} on example row {rows[bad[0]]}")
    return values


def first_failing_row(reward: Reward, prompts: list[str], completions: list[str], columns: dict[str, list[Any]],
                      rows: Sequence[int]) -> int | None:
    """Call the reward one completion at a time to name the example that makes it fail."""
    for i in range(len(completions)):
        one = {name: values[i:i + 1] for name, values in columns.items()}
        try:
            reward.fn(prompts[i:i + 1], completions[i:i + 1], **one, **reward.args)
        except Exception:  # noqa: BLE001
            return int(rows[i])
    return None
