"""The two-layer CNN of the CIFAR-10 study, with a switchable activation (ReLU vs Sigmoid).

x (B, C, 32, 32) -> conv k×k (c1) -> act -> maxpool 2 -> conv k×k (c2) -> act -> maxpool 2
  -> flatten -> Linear(hidden) -> act -> Linear(K).
With ReLU it reaches about 60% on CIFAR-10; with Sigmoid the saturating gradients (σ' ≤ 1/4 per layer)
make it learn far more slowly under the same SGD budget, which is the point of the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tunelab.models.image_shape import activation
from tunelab.models.scratch import register_architecture


@dataclass(frozen=True)
class CNN2Settings:
    channels: tuple[int, int] = (32, 64)
    kernel: int = 5
    hidden: int = 256
    activation: str = "relu"
    in_channels: int = 3  # from the data
    image_size: int = 32  # from the data
    classes: int = 10  # from the data

    def __post_init__(self) -> None:
        activation(self.activation)
        if len(self.channels) != 2:
            raise ValueError("channels: give two widths, one per convolution")


class CNN2(nn.Module):
    def __init__(self, settings: CNN2Settings):
        super().__init__()
        c1, c2 = settings.channels
        pad = settings.kernel // 2  # 'same' convolutions: only the pools shrink the image
        self.features = nn.Sequential(
            nn.Conv2d(settings.in_channels, c1, settings.kernel, padding=pad), activation(settings.activation),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, settings.kernel, padding=pad), activation(settings.activation), nn.MaxPool2d(2))
        side = settings.image_size // 4
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * side * side, settings.hidden),
                                        activation(settings.activation), nn.Linear(settings.hidden, settings.classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, K)


register_architecture("cnn2", CNN2Settings, lambda settings, vocab_size=None: CNN2(settings))
