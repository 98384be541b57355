"""From-scratch architectures named by a recipe's `model.arch: {type: NAME, ...settings}`.

Each architecture is one file under tunelab/models/ in nanoGPT model.py style (a settings dataclass, a
Block, `forward(idx, targets=None)`); it registers here with its settings class and a builder taking
(settings, vocab_size or None). The recipe's keys are checked against the dataclass, so a typo is one
line naming `model.arch.<key>`, and the saved artifact is the settings plus a safetensors file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunelab.errors import TunelabError


@dataclass(frozen=True)
class Architecture:
    settings: type  # a dataclass
    build: Callable[[Any, int | None], Any]  # (settings, vocab_size) -> nn.Module


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(name: str, settings: type, build: Callable[[Any, int | None], Any]) -> None:
    if not dataclasses.is_dataclass(settings):
        raise TypeError(f"architecture {name}: settings must be a dataclass")
    ARCHITECTURES[name] = Architecture(settings, build)


def parse_arch(arch: dict[str, Any]) -> tuple[str, Any]:
    """(type name, settings instance) for a model.arch section; one-line errors naming the key."""
    kind = arch.get("type")
    if kind not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES)) or "none registered"
        raise TunelabError(f"model.arch.type: unknown architecture {kind!r}; known: {known}")
    spec = ARCHITECTURES[kind]
    fields = {f.name: f for f in dataclasses.fields(spec.settings)}
    values = {k: v for k, v in arch.items() if k != "type"}
    for key in values:
        if key not in fields:
            raise TunelabError(f"model.arch.{key}: unknown setting of architecture {kind!r}; "
                               f"known: {', '.join(fields)}")
    try:
        return kind, spec.settings(**values)
    except (TypeError, ValueError) as err:
        raise TunelabError(f"model.arch: {err}") from None


def build_scratch_model(arch: dict[str, Any], vocab_size: int | None = None) -> Any:
    kind, settings = parse_arch(arch)
    return ARCHITECTURES[kind].build(settings, vocab_size)
