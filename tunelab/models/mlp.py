"""A multi-layer perceptron on flattened pixels: the CIFAR-10 study's baseline showing why convolutions matter.

x (B, C, H, W) -> flatten (B, C·H·W) -> [Linear -> act -> Dropout] x len(hidden) -> Linear -> logits (B, K).
No weight sharing and no notion of neighbouring pixels: on CIFAR-10 it stays well below a two-layer CNN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tunelab.models.image_shape import activation
from tunelab.models.scratch import register_architecture


@dataclass(frozen=True)
class MLPSettings:
    hidden: tuple[int, ...] = (512, 256)
    activation: str = "relu"
    dropout: float = 0.0
    in_channels: int = 3  # from the data
    image_size: int = 32  # from the data
    classes: int = 10  # from the data

    def __post_init__(self) -> None:
        activation(self.activation)  # a bad name fails while the recipe is read


class MLP(nn.Module):
    def __init__(self, settings: MLPSettings):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = settings.in_channels * settings.image_size ** 2
        for hidden in settings.hidden:
            layers += [nn.Linear(width, hidden), activation(settings.activation), nn.Dropout(settings.dropout)]
            width = hidden
        layers.append(nn.Linear(width, settings.classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, K)


register_architecture("mlp", MLPSettings, lambda settings, vocab_size=None: MLP(settings))
