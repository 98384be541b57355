"""Exact trainable-parameter accounting, the `adapter.max_trainable` check, and rank planning to fill it.

Counts come from the live modules (`named_parameters`, tied weights counted once), never from a formula,
so what the report says is what the optimizer gets. The planner uses each variant's `param_count`, which
the tests check against the live counts.
"""

from __future__ import annotations

import re
from dataclasses import replace

from torch import nn

from tunelab.adapters.inject import (
    ADAPTERS,
    Target,
    adapter_modules,
    compile_patterns,
    inject_adapters,
    resolve_targets,
)
from tunelab.adapters.spec import AdapterConfig, LayerRule
from tunelab.errors import TunelabError
from tunelab.models.heads import is_head_parameter


def trainable_breakdown(model: nn.Module, cfg: AdapterConfig | None = None) -> dict[str, int | float]:
    """Trainable counts by category: adapters, head (task head names or cfg.trainable_extra), other.

    Also: trainable (their sum), total (all parameters), percent (trainable / total · 100) and modules
    (number of adapted layers).
    """
    adapters = adapter_modules(model)
    adapter_ids = {id(p) for mod in adapters.values() for p in mod.adapter_parameters().values()}
    extra = compile_patterns(cfg.trainable_extra, "adapter.trainable_extra") if cfg else []
    counts = {"adapters": 0, "head": 0, "other": 0}
    total = 0
    for name, param in model.named_parameters():
        total += real_numel(param)
        if not param.requires_grad:
            continue
        if id(param) in adapter_ids:
            counts["adapters"] += param.numel()
        elif is_head_parameter(name) or any(p.search(name) for p in extra):
            counts["head"] += param.numel()
        else:
            counts["other"] += param.numel()
    trainable = sum(counts.values())
    return {**counts, "trainable": trainable, "total": total,
            "percent": 100.0 * trainable / max(total, 1), "modules": len(adapters)}


def real_numel(param) -> int:
    """Weights a parameter stands for: a bitsandbytes 4-bit tensor packs two weights per uint8 element."""
    return param.numel() * 2 if type(param).__name__ == "Params4bit" else param.numel()


def check_budget(model: nn.Module, cfg: AdapterConfig) -> dict[str, int | float]:
    """Raise if the model trains more than cfg.max_trainable parameters; return the breakdown."""
    counts = trainable_breakdown(model, cfg)
    raise_if_over_budget(counts, cfg.max_trainable)
    return counts


def raise_if_over_budget(counts: dict[str, int | float], max_trainable: int | None) -> None:
    if max_trainable is not None and counts["trainable"] > max_trainable:
        raise TunelabError(
            f"{counts['trainable']:,} trainable parameters exceed adapter.max_trainable={max_trainable:,} "
            f"(adapters {counts['adapters']:,}, head {counts['head']:,}, other {counts['other']:,})")


def target_cost(target: Target, rank: int) -> int:
    module = target.module
    try:
        return ADAPTERS[target.variant].param_count(module.in_features, module.out_features,
                                                    replace(target.settings, rank=rank))
    except TunelabError as err:
        raise TunelabError(f"adapter on {target.name}: {err}") from None


def plan_ranks(model: nn.Module, cfg: AdapterConfig, head_params: int,
               num_heads: int | None = None) -> AdapterConfig:
    """Ranks that fill `max_trainable - head_params` without exceeding it (plan: fill).

    Largest uniform rank first (capped per layer at min(in, out), beyond which rank adds nothing), then
    one pass in model order giving +1 to each layer whose extra cost still fits, so the leftover is
    smaller than one more rank-step of any remaining layer. alpha is kept, so s = alpha / r follows the
    rank as in plain LoRA. Returns a fixed-plan config with one exact-name LayerRule per layer put
    in front of the user's rules (variant/alpha/dropout overrides copied from them).
    """
    if cfg.max_trainable is None:
        raise TunelabError("adapter.plan=fill needs adapter.max_trainable")
    targets = resolve_targets(model, cfg, num_heads)
    budget = cfg.max_trainable - head_params
    caps = [min(t.module.in_features, t.module.out_features) for t in targets]

    def total(rank: int) -> int:
        return sum(target_cost(t, min(rank, cap)) for t, cap in zip(targets, caps, strict=True))

    if total(1) > budget:
        raise TunelabError(f"adapter.max_trainable={cfg.max_trainable:,} leaves {budget:,} parameters after "
                           f"the head's {head_params:,}, but rank 1 on {len(targets)} layers needs {total(1):,}")
    low, high = 1, max(caps)
    while low < high:  # largest uniform rank whose total fits
        mid = (low + high + 1) // 2
        low, high = (mid, high) if total(mid) <= budget else (low, mid - 1)
    ranks = [min(low, cap) for cap in caps]
    spent = total(low)
    for i, target in enumerate(targets):
        step = target_cost(target, ranks[i] + 1) - target_cost(target, ranks[i])
        if ranks[i] < caps[i] and spent + step <= budget:
            ranks[i] += 1
            spent += step
    rules = [LayerRule(pattern=f"^{re.escape(t.name)}$", rank=rank, alpha=t.settings.alpha,
                       dropout=t.settings.dropout, variant=t.variant) for t, rank in zip(targets, ranks, strict=True)]
    return cfg.model_copy(update={"layers": rules + list(cfg.layers), "plan": "fixed"})


def format_breakdown(counts: dict[str, int | float], rows: list[tuple[str, str, int, int]],
                     max_trainable: int | None = None) -> str:
    """Plain-text report: adapted layers grouped by name with layer indices collapsed, then totals."""
    groups: dict[tuple[str, str, int], list[int]] = {}
    for name, variant, rank, params in rows:
        groups.setdefault((re.sub(r"\.\d+\.", ".N.", name), variant, rank), []).append(params)
    width = max([len(key[0]) for key in groups] + [len("module")])
    lines = [f"{'module':<{width}}  {'variant':<11} {'rank':>4} {'layers':>6} {'params':>12}"]
    for (name, variant, rank), params in sorted(groups.items(), key=lambda item: (item[0][0], -item[0][2])):
        lines.append(f"{name:<{width}}  {variant:<11} {rank:>4} {len(params):>6} {sum(params):>12,}")
    lines += ["", *(f"{key:<10}{counts[key]:>14,}" for key in ("adapters", "head", "other")),
              f"{'trainable':<10}{counts['trainable']:>14,} of {counts['total']:,} "
              f"({counts['percent']:.3f}%)"]
    if max_trainable is not None:
        verdict = "ok" if counts["trainable"] <= max_trainable else "EXCEEDS"
        lines.append(f"{'budget':<10}{max_trainable:>14,} ({verdict})")
    return "\n".join(lines)


def budget_report(model: nn.Module, cfg: AdapterConfig, num_heads: int | None = None) -> str:
    """What `tunelab budget RECIPE` prints. Injects adapters first if the model has none yet (the
    budget is reported, not enforced, so an over-budget recipe still shows where the parameters go).
    With variant none the model's own requires_grad flags are reported (full or head-only training)."""
    if cfg.variant != "none" and not adapter_modules(model):
        inject_adapters(model, cfg, num_heads=num_heads, enforce_budget=False)
    rows = [(name, mod.variant, mod.r, sum(p.numel() for p in mod.adapter_parameters().values()))
            for name, mod in adapter_modules(model).items()]
    return format_breakdown(trainable_breakdown(model, cfg), rows, cfg.max_trainable)
