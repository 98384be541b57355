"""Load a YAML recipe, apply `key.sub=value` overrides, validate into a frozen `RunConfig`.

Every failure becomes a `TunelabError` with one line naming the file or dotted key, plus a
"did you mean" suggestion for misspelt keys.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tunelab.config import RunConfig
from tunelab.errors import TunelabError


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    raw = read_yaml(path)
    raw = apply_overrides(raw, overrides)
    raw.setdefault("name", Path(path).stem)
    config = validate(raw, source=str(path))
    if config.stages:
        from tunelab.stages import check_stages

        check_stages(config, source=str(path))
    return config


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TunelabError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise TunelabError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TunelabError(f"{path}: a recipe must be a mapping of sections (model, data, ...)")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise TunelabError(f"override '{text}' must look like key.sub=value (e.g. train.lr=3e-4)")
    key, _, value = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise TunelabError(f"override '{text}' has an empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str):
        parsed = _maybe_number(parsed)
    return parts, parsed


def _maybe_number(text: str) -> Any:
    """YAML 1.1 reads '3e-4' as a string; users mean a float."""
    try:
        return float(text) if any(c in text for c in "eE.") else int(text)
    except ValueError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] | dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        parts = key.split(".") if isinstance(key, str) else key
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                dotted = ".".join(parts[: i + 1])
                raise TunelabError(f"override {'.'.join(parts)}: '{dotted}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def validate(raw: dict[str, Any], source: str = "recipe") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise TunelabError(f"{source}: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """First error only, as 'dotted.key: problem (did you mean ...?)'; more count as '+N more'."""
    errors = exc.errors()
    first = errors[0]
    loc = [str(p) for p in first["loc"]]
    key = ".".join(loc) or "config"
    if first["type"] == "extra_forbidden":
        message = f"{key}: unknown key" + _suggestion(loc)
    elif first["type"] == "missing":
        message = f"{key}: required key is missing"
    else:
        got = first.get("input")
        shown = repr(got) if not isinstance(got, dict) else "a mapping"
        message = f"{key}: {first['msg'].removeprefix('Value error, ')} (got {shown[:60]})"
    if len(errors) > 1:
        message += f" [+{len(errors) - 1} more]"
    return message


def _suggestion(loc: list[str]) -> str:
    fields = _fields_at(loc[:-1])
    matches = difflib.get_close_matches(loc[-1], fields, n=1, cutoff=0.6)
    if matches:
        return f" (did you mean '{matches[0]}'?)"
    return f" (valid keys: {', '.join(sorted(fields))})" if fields else ""


def _fields_at(loc: list[str]) -> list[str]:
    model: type[BaseModel] | None = RunConfig
    for part in loc:
        if model is None or part.isdigit():
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        model = _model_in(annotation)
    return list(model.model_fields) if model else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found:
            return found
    return None


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


def with_overrides(config: RunConfig, overrides: dict[str, Any], source: str = "variant") -> RunConfig:
    """The config with dotted overrides applied; sections the recipe left out stay unset (so checks like
    "an adapter section on a from-scratch model" see the recipe, not the defaults)."""
    raw = apply_overrides(config.model_dump(mode="json", exclude_unset=True), overrides)
    return validate(raw, source=source)
