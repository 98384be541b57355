"""Whether a model was placed on its devices when it was loaded, without importing transformers."""

from __future__ import annotations

from torch import nn


def is_device_mapped(model: nn.Module) -> bool:
    """True when the model was placed at load time (quantised or device-mapped): `.to(device)` must be
    skipped, bitsandbytes layers cannot be cast and a multi-device map would be undone."""
    return bool(getattr(model, "is_quantized", False) or getattr(model, "hf_device_map", None))
