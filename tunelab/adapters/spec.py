"""The `adapter:` section of a recipe: which variant, where, and at what size."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    """Base for every config section: immutable, and unknown keys are errors (no silent typos)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LayerRule(Frozen):
    """Per-layer/module settings (seed 004: per-layer rank and alpha). First matching rule wins."""

    pattern: str = Field(description="regex matched (re.search) against the full module name")
    rank: int | None = Field(default=None, ge=1)
    alpha: float | None = Field(default=None, gt=0)
    dropout: float | None = Field(default=None, ge=0, lt=1)
    variant: str | None = None
    exclude: bool = False


class AdapterConfig(Frozen):
    """Which adapter goes where (docs/adapters.md). `variant: none` = no adapters, full fine-tuning.

    `init` applies to lora/dora only (the normalising variants always start B small); `scale_*` to
    dora_scaled/ddora only; `norm_eps` guards DoRA's row norm and the per-token normalisation.
    """

    variant: Literal["none", "lora", "dora", "dora_scaled", "ddora"] = "lora"
    rank: int = Field(default=8, ge=1)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    targets: list[str] = Field(default_factory=lambda: ["query", "value"],
                               description="regexes on module names; matching nn.Linear layers get adapters")
    exclude: list[str] = Field(default_factory=list, description="regexes of modules never adapted")
    layers: list[LayerRule] = Field(default_factory=list)
    init: Literal["zero", "small"] = Field(
        default="zero", description="LoRA B init: zero (PEFT default) or small = 1e-4*N(0,1/r) (seed 000)")
    scale_granularity: Literal["head", "feature", "scalar"] = "head"
    scale_init: float = 2.0
    norm_eps: float = Field(default=1e-6, gt=0)
    trainable_extra: list[str] = Field(
        default_factory=list, description="regexes of base parameters left trainable (e.g. classifier)")
    max_trainable: int | None = Field(default=None, ge=1)
    plan: Literal["fixed", "fill"] = "fixed"
