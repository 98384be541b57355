"""Switch adapters off: the model with every adapter disabled *is* the frozen base model.

DPO and GRPO need a reference model, the policy before fine-tuning. With adapters the frozen base is
already inside the policy, so `with disabled(model): ref_logits = model(...)` gives it with no second
copy of the weights: every LowRankLinear computes exactly `base(x)` = W x + b (bit for bit what the
un-injected model computes), and nothing of the adapter (A, B, m, scales, adapter dropout) runs, so no
gradient reaches adapter parameters inside the block.

What it does not switch: parameters trained outside the adapters (`adapter.trainable_extra`, e.g. a
classifier head) and full fine-tuning (no adapters: an error here, the reference then needs a copy).
Run the reference forward under `torch.no_grad()` as usual; `disabled` only changes what is computed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from tunelab.adapters.inject import adapter_modules
from tunelab.errors import TunelabError


@contextmanager
def disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Every adapter in `model` is its base layer inside the block; each one's previous on/off state is
    restored on exit, also on an exception, so blocks nest (an inner exit leaves the outer one off)."""
    adapters = list(adapter_modules(model).values())
    if not adapters:
        raise TunelabError(f"disabled(): {type(model).__name__} has no adapters to switch off; a reference "
                           "model for full fine-tuning (adapter.variant: none) needs a frozen copy")
    before = [adapter.enabled for adapter in adapters]
    for adapter in adapters:
        adapter.enabled = False
    try:
        yield model
    finally:
        for adapter, state in zip(adapters, before, strict=True):
            adapter.enabled = state
