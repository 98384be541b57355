"""The parameters a run changes: what checkpoints and adapter artifacts store, and nothing frozen."""

from __future__ import annotations

import torch
from torch import nn


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter by model name (adapters, heads, or all weights in full fine-tuning), on CPU."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def buffer_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Persistent buffers that training changes (BatchNorm running mean/var and batch counts), on CPU.

    Only buffers of modules that update them in train mode are stored: a pretrained encoder's fixed
    position-id buffers would otherwise be copied into every checkpoint for nothing."""
    state: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        if not isinstance(module, nn.modules.batchnorm._NormBase):
            continue
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None:
                state[f"{module_name}.{name}" if module_name else name] = buffer.detach().clone().cpu()
    return state
