"""The input/output shape every from-scratch image classifier takes from its data, not from the recipe.

Each vision architecture's settings dataclass ends with these three fields; the image-classification task
fills them from the data (channels and size of the images, number of classes) before building.
"""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "tanh": nn.Tanh}
DATA_FIELDS = ("in_channels", "image_size", "classes")


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r}: choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()
