"""Put adapters into any model: one registry, one function that swaps matching nn.Linear layers.

Module names are matched with `re.search` against the full dotted name (e.g.
`bert.encoder.layer.3.attention.self.query`), so `query` hits every layer and `layer\\.[0-2]\\.` only
the first three. A new variant is one file, one line in `ADAPTERS` and one row in the test table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from tunelab.adapters.ddora import DDoRALinear
from tunelab.adapters.dora import DoRALinear
from tunelab.adapters.dora_scaled import DoRAScaledLinear
from tunelab.adapters.lora import LoRALinear
from tunelab.adapters.lowrank import LowRankLinear, ModuleSettings
from tunelab.adapters.spec import AdapterConfig, LayerRule
from tunelab.errors import TunelabError

ADAPTERS: dict[str, type[LowRankLinear]] = {
    "lora": LoRALinear,
    "dora": DoRALinear,
    "dora_scaled": DoRAScaledLinear,
    "ddora": DDoRALinear,
}


@dataclass(frozen=True)
class Target:
    """One linear layer that will get an adapter, with its resolved variant and settings."""

    name: str
    module: nn.Linear
    variant: str
    settings: ModuleSettings


def num_heads_of(model: nn.Module) -> int | None:
    """`model.config.num_attention_heads`, or None for models without one (plain nn.Modules)."""
    heads = getattr(getattr(model, "config", None), "num_attention_heads", None)
    return heads if isinstance(heads, int) and heads > 0 else None


def head_dim_of(model: nn.Module, num_heads: int | None) -> int | None:
    """hidden_size // num_heads: the block of features one head owns, also in GQA k/v projections."""
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    if num_heads and isinstance(hidden, int) and hidden % num_heads == 0:
        return hidden // num_heads
    return None


def compile_patterns(patterns: list[str], key: str) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise TunelabError(f"{key}: invalid regex {pattern!r} ({err})") from None
    return compiled


def adapter_modules(model: nn.Module) -> dict[str, LowRankLinear]:
    """Every injected adapter, keyed by its module name in the model."""
    return {name: mod for name, mod in model.named_modules() if isinstance(mod, LowRankLinear)}


def linear_modules(model: nn.Module) -> dict[str, nn.Linear]:
    """Plain nn.Linear layers (the base layer inside an adapter does not count)."""
    inside = {f"{name}.base" for name in adapter_modules(model)}
    return {name: mod for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and name not in inside}


def describe_linears(names: list[str], limit: int = 8) -> str:
    """A short sample of linear names with layer indices collapsed to N, for error messages."""
    seen: list[str] = []
    for name in names:
        short = re.sub(r"\.\d+\.", ".N.", name)
        if short not in seen:
            seen.append(short)
    more = ", ..." if len(seen) > limit else ""
    return ", ".join(seen[:limit]) + more


def module_settings(cfg: AdapterConfig, rule: LayerRule | None, head_dim: int | None,
                    num_heads: int | None) -> tuple[str, ModuleSettings]:
    """Global settings with the first matching rule's overrides: (variant, settings)."""
    def pick(override: object, default: object) -> object:
        return default if override is None else override

    variant = str(pick(rule and rule.variant, cfg.variant))
    settings = ModuleSettings(
        rank=int(pick(rule and rule.rank, cfg.rank)), alpha=float(pick(rule and rule.alpha, cfg.alpha)),
        dropout=float(pick(rule and rule.dropout, cfg.dropout)), init=cfg.init,
        scale_granularity=cfg.scale_granularity, scale_init=cfg.scale_init, norm_eps=cfg.norm_eps,
        head_dim=head_dim, num_heads=num_heads)
    return variant, settings


def check_patterns_match(patterns: list[re.Pattern[str]], names: list[str], key: str, model: nn.Module,
                         what: str = "nn.Linear") -> None:
    """A pattern that matches nothing is almost always a typo: fail loudly, show what names look like."""
    for pattern in patterns:
        if not any(pattern.search(name) for name in names):
            raise TunelabError(f"{key}: pattern {pattern.pattern!r} matches no {what} in "
                               f"{type(model).__name__}; {what} names look like: {describe_linears(names)}")


def resolve_targets(model: nn.Module, cfg: AdapterConfig, num_heads: int | None = None) -> list[Target]:
    """Which linears get which adapter: targets minus exclude, then the first matching LayerRule."""
    linears = linear_modules(model)
    names = list(linears)
    targets = compile_patterns(cfg.targets, "adapter.targets")
    exclude = compile_patterns(cfg.exclude, "adapter.exclude")
    rules = [(compile_patterns([rule.pattern], f"adapter.layers[{i}].pattern")[0], rule)
             for i, rule in enumerate(cfg.layers)]
    check_patterns_match(targets, names, "adapter.targets", model)
    for i, (pattern, rule) in enumerate(rules):
        check_patterns_match([pattern], names, f"adapter.layers[{i}].pattern", model)
        if rule.variant is not None and rule.variant not in ADAPTERS and rule.variant != "none":
            raise TunelabError(f"adapter.layers[{i}].variant: unknown variant {rule.variant!r}; "
                               f"known: none, {', '.join(ADAPTERS)}")
    num_heads = num_heads if num_heads is not None else num_heads_of(model)
    head_dim = head_dim_of(model, num_heads)
    chosen = []
    for name, module in linears.items():
        if not any(p.search(name) for p in targets) or any(p.search(name) for p in exclude):
            continue
        rule = next((rule for pattern, rule in rules if pattern.search(name)), None)
        variant, settings = module_settings(cfg, rule, head_dim, num_heads)
        if (rule is not None and rule.exclude) or variant == "none":
            continue
        chosen.append(Target(name, module, variant, settings))
    return chosen


def build_adapter(target: Target) -> LowRankLinear:
    try:
        return ADAPTERS[target.variant](target.module, target.settings)
    except TunelabError as err:
        raise TunelabError(f"adapter on {target.name}: {err}") from None


def inject_adapters(model: nn.Module, cfg: AdapterConfig, num_heads: int | None = None,
                    enforce_budget: bool = True) -> list[str]:
    """Freeze every base parameter, wrap each targeted nn.Linear, unfreeze `trainable_extra`.

    `cfg.variant == "none"` means no adapters: every parameter stays trainable (full fine-tuning).
    `num_heads` overrides `model.config.num_attention_heads` for "head" scale granularity.
    With `plan: fill` the ranks are chosen first by `plan_ranks`; with `max_trainable` set (and
    `enforce_budget`) the count is checked against it. All validation, budget included, happens before
    the model is touched, so a bad spec leaves the model as it was. Returns the adapted module names, in model order.
    """
    from tunelab.adapters.budget import plan_ranks, raise_if_over_budget  # budget.py imports this module

    if adapter_modules(model):
        raise TunelabError(f"{type(model).__name__} already has adapters; inject into a fresh base model")
    extra = compile_patterns(cfg.trainable_extra, "adapter.trainable_extra")
    params = dict(model.named_parameters())
    check_patterns_match(extra, list(params), "adapter.trainable_extra", model, what="parameter")
    if cfg.variant == "none":
        model.requires_grad_(True)
        return []
    head_params = sum(p.numel() for name, p in params.items() if any(x.search(name) for x in extra))
    if cfg.plan == "fill":
        cfg = plan_ranks(model, cfg, head_params, num_heads=num_heads)
    wrapped = [(target.name, build_adapter(target)) for target in resolve_targets(model, cfg, num_heads)]
    adapter_params = sum(p.numel() for _, mod in wrapped for p in mod.adapter_parameters().values())
    if enforce_budget:
        raise_if_over_budget({"trainable": adapter_params + head_params, "adapters": adapter_params,
                              "head": head_params, "other": 0}, cfg.max_trainable)
    model.requires_grad_(False)
    for name, adapter in wrapped:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, adapter)
    for name, param in model.named_parameters():
        if any(p.search(name) for p in extra):
            param.requires_grad_(True)
    return [name for name, _ in wrapped]
