"""The multi-scale CNN of the CIFAR-10 study (88% on the full 50k set after 40 epochs on a GTX 1070).

Inception-like: the first stage looks at the image through four kernel sizes at once.

    x (B, C, 32, 32)
    stem:   [conv 3×3 | conv 5×5 | conv 7×7 | conv 9×9] (w each, 'same') -> concat (4w)
            -> LeakyReLU(0.1) -> bn1 -> maxpool1                        (B, 4w, 16, 16)
    block1: conv 3×3 (4w -> 2w) -> BN -> LeakyReLU(0.1)
    block2: conv 3×3 (2w -> 4w) -> BN -> LeakyReLU(0.1) -> maxpool2     (B, 4w, 8, 8)
    block3: conv 3×3 (4w -> 4w) -> BN -> LeakyReLU(0.1)
    final:  [conv 3×3 | conv 5×5] (2w each) -> concat (4w) -> bn2 -> LeakyReLU(0.1) -> maxpool  (B, 4w, 4, 4)
    head:   flatten -> fc1 -> fc2 -> fc3 -> fc4 (ReLU after each) -> fc5 -> logits (B, K)

Batch norm is the only regulariser (the study found dropout unnecessary). Trained with SGD momentum 0.9,
batch 16, lr 1e-3 -> 3e-4 (epoch 21) -> 1e-4 (epoch 31) of 40.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tunelab.models.scratch import register_architecture

SLOPE = 0.1  # Leaky ReLU's negative slope: keeps a gradient for negative pre-activations


@dataclass(frozen=True)
class MultiScaleSettings:
    width: int = 32  # channels per branch of the stem
    kernels: tuple[int, ...] = (3, 5, 7, 9)
    fc: tuple[int, int, int, int] = (512, 256, 128, 64)  # fc1..fc4; fc5 maps to the classes
    in_channels: int = 3  # from the data
    image_size: int = 32  # from the data
    classes: int = 10  # from the data

    def __post_init__(self) -> None:
        if any(k % 2 == 0 for k in self.kernels):
            raise ValueError("kernels: odd sizes only ('same' padding keeps every branch the same size)")
        if len(self.fc) != 4:
            raise ValueError("fc: give four widths (fc1..fc4)")


def conv_bn_act(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.LeakyReLU(SLOPE))


class Branches(nn.Module):
    """Parallel 'same' convolutions of different kernel sizes, concatenated along channels."""

    def __init__(self, c_in: int, c_out: int, kernels: tuple[int, ...]):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, k, padding=k // 2) for k in kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([conv(x) for conv in self.convs], dim=1)  # (B, len(kernels)·c_out, H, W)


class MultiScaleCNN(nn.Module):
    def __init__(self, settings: MultiScaleSettings):
        super().__init__()
        w, wide = settings.width, settings.width * len(settings.kernels)
        self.stem = Branches(settings.in_channels, w, settings.kernels)
        self.act = nn.LeakyReLU(SLOPE)
        self.bn1 = nn.BatchNorm2d(wide)
        self.maxpool1 = nn.MaxPool2d(2)
        self.block1 = conv_bn_act(wide, 2 * w)
        self.block2 = conv_bn_act(2 * w, wide)
        self.maxpool2 = nn.MaxPool2d(2)
        self.block3 = conv_bn_act(wide, wide)
        self.final = Branches(wide, 2 * w, (3, 5))
        self.bn2 = nn.BatchNorm2d(4 * w)
        self.maxpool3 = nn.MaxPool2d(2)
        side = settings.image_size // 8
        fc1, fc2, fc3, fc4 = settings.fc
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * w * side * side, fc1), nn.ReLU(), nn.Linear(fc1, fc2), nn.ReLU(),
            nn.Linear(fc2, fc3), nn.ReLU(), nn.Linear(fc3, fc4), nn.ReLU(), nn.Linear(fc4, settings.classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.maxpool1(self.bn1(self.act(self.stem(x))))  # (B, 4w, H/2, W/2)
        h = self.maxpool2(self.block2(self.block1(h)))  # (B, 4w, H/4, W/4)
        h = self.block3(h)
        h = self.maxpool3(self.act(self.bn2(self.final(h))))  # (B, 4w, H/8, W/8)
        return self.head(h)  # (B, K)


register_architecture("multiscale", MultiScaleSettings, lambda settings, vocab_size=None: MultiScaleCNN(settings))
