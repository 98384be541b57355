"""The parameters a run changes: what checkpoints and adapter artifacts store, and nothing frozen."""

from __future__ import annotations

import torch
from torch import nn


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter by model name (adapters, heads, or all weights in full fine-tuning), on CPU."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}
