"""Stage chains: SFT → DPO → SFT (or any tasks) in one recipe, each stage from the previous one's weights.

A recipe's `stages:` is a list of mappings, each with a `name` and any recipe sections (`task`, `data`,
`train`, `preference`, ...). Stage k's config is the recipe with the stage's sections merged in
(mapping into mapping, key by key; the stage wins), plus `model.init_from` = stage k−1's run folder, so
its adapters continue from where the previous stage stopped (`tunelab.models.init_from`). A DPO stage's
reference is then the previous stage's model: the policy as the stage starts.

Folders: runs/<recipe>/<run-id>/<stage>/ (one run folder per stage) and chain.json beside them (stages in
order, the base model). `--resume runs/<recipe>/<run-id>` skips finished stages, resumes the interrupted
one from its checkpoint and starts the ones not begun. This module is torch-free: recipes are checked
without importing the training stack.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from tunelab.config import RunConfig
from tunelab.errors import TunelabError

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
CHAIN_FILE = "chain.json"
CHAIN_ONLY_KEYS = ("stages", "variants", "compare_prompts", "compare_limit")


def merge_sections(base: dict[str, Any], stage: dict[str, Any]) -> dict[str, Any]:
    """The recipe with the stage's keys merged in: nested mappings merge, everything else is replaced;
    dotted keys (`train.lr: 1e-4`) address one nested key."""
    out = copy.deepcopy(base)
    for key, value in stage.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        leaf = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = merge_sections(node[leaf], value)
        else:
            node[leaf] = copy.deepcopy(value)
    return out


def stage_names(config: RunConfig) -> list[str]:
    return [str(stage.get("name")) for stage in config.stages]


def stage_config(config: RunConfig, index: int, init_from: str | None = None, source: str = "recipe") -> RunConfig:
    """The full config of stage `index` (0-based), starting from `init_from` when given."""
    from tunelab.recipes import validate

    stage = config.stages[index]
    name = stage.get("name")
    recipe = config.model_dump(mode="json", exclude_unset=True)  # sections left out stay unset, as in variants
    base = {k: v for k, v in recipe.items() if k not in CHAIN_ONLY_KEYS}
    body = {k: v for k, v in stage.items() if k != "name"}
    for key in body:
        if key.split(".")[0] in CHAIN_ONLY_KEYS or key == "model.init_from":
            raise TunelabError(f"{source}: stages.{name}.{key}: not allowed inside a stage")
    raw = merge_sections(base, body)
    if init_from is not None:
        raw.setdefault("model", {})["init_from"] = init_from
    return validate(raw, source=f"{source}: stages.{name}")


def check_stages(config: RunConfig, source: str = "recipe") -> None:
    """Every stage named, uniquely, and valid as a config of its own; one line naming the stage otherwise."""
    if not config.stages:
        return
    if config.variants:
        raise TunelabError(f"{source}: stages and variants cannot be combined in one recipe; run the variants "
                           "as separate chains")
    seen: set[str] = set()
    for i, stage in enumerate(config.stages):
        name = stage.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise TunelabError(f"{source}: stages[{i}].name: every stage needs a name of letters, digits, _ . - "
                               f"(got {name!r})")
        if name in seen:
            raise TunelabError(f"{source}: stages.{name}: the name is used twice")
        seen.add(name)
        first = stage_config(config, i, None, source)
        if i > 0 and first.model.arch is None and first.model.name != stage_config(config, 0, None, source).model.name:
            raise TunelabError(f"{source}: stages.{name}.model.name: every stage continues the first stage's "
                               "model; set model.name once, outside the stages")
