"""`tunelab budget RECIPE`: the exact trainable-parameter count a recipe would train, per module type,
computed by building the model and attaching the adapters exactly as `tunelab run` would."""

from __future__ import annotations

from tunelab.recipes import load_recipe, with_overrides


def budget_for_recipe(recipe: str, overrides: list[str]) -> str:
    from tunelab.adapters.budget import budget_report
    from tunelab.runner import load_task, prepare_model

    config = load_recipe(recipe, overrides)
    configs = {label: with_overrides(config, o, f"variants.{label}") for label, o in config.variants.items()} \
        or {config.name: config}
    source, task = load_task(config)
    parts = []
    for label, variant_config in configs.items():
        task.config = variant_config
        model, _, _ = prepare_model(variant_config, task, source, enforce_budget=False)
        title = f"== {label} ({variant_config.adapter.variant}) =="
        parts.append(title + "\n" + budget_report(model, variant_config.adapter))
    return "\n\n".join(parts)
