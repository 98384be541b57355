"""A finished run's model as the exporters need it: loaded by `tunelab.models.artifact.load_run_model`
(the one loader of run artifacts, shared with eval and predict), plus the facts every format checks.

The loader rebuilds the model exactly as trained: the recipe's task builds its head (the classifier's
label names come from the run's task_state.json), the base is re-resolved from `model.name` and must
match the adapter's fingerprint, or `artifact/` holds the whole model for a full fine-tune. This module
only adds what exporting needs on top: which adapter variants are present, a refusal for models that are
not transformers models (from-scratch `model.arch` runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from tunelab.adapters.inject import adapter_modules
from tunelab.config import RunConfig
from tunelab.errors import TunelabError


@dataclass
class RunModel:
    """A run's model in eval mode (adapters injected and loaded, not merged) with its tokenizer."""

    run_dir: Path
    config: RunConfig  # the run's resolved recipe
    model: nn.Module
    tokenizer: Any

    @property
    def variants(self) -> set[str]:
        """Adapter variants in the model; empty for a full fine-tune."""
        return {mod.variant for mod in adapter_modules(self.model).values()}

    @property
    def is_causal_lm(self) -> bool:
        return bool(getattr(self.model, "can_generate", lambda: False)())


def check_transformers_model(model: nn.Module, run_dir: Path) -> None:
    """Every export writes transformers' layouts (state-dict names, config.json); a from-scratch
    nanoGPT-style model has neither."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise TunelabError(f"run {run_dir} holds a from-scratch {type(model).__name__} (model.arch); "
                           "tunelab export writes pretrained transformers models only")


def load_run(run_dir: Path | str) -> RunModel:
    """The run's model (eval mode, adapters loaded and checked against the base fingerprint)."""
    from tunelab.models.artifact import load_run_model

    run_dir = Path(run_dir).expanduser()
    loaded = load_run_model(run_dir)
    check_transformers_model(loaded.model, run_dir)
    return RunModel(run_dir, loaded.config, loaded.model, loaded.tokenizer)
