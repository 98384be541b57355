"""A fast CIFAR-10 network in the style of airbench (Keller Jordan's 94%-in-seconds recipe), written afresh.

    x (B, C, 32, 32)
    whiten: conv 2×2 (C -> 2·4C), weights from the training patches' covariance, frozen  (B, 24, 31, 31)
            -> GELU
    3 groups: conv 3×3 -> maxpool 2 -> BN -> GELU -> conv 3×3 -> BN -> GELU            (B, w3, 3, 3)
    head:  global max pool -> Linear(w3 -> K, no bias) -> × logit_scale

Why each piece: the whitening layer decorrelates 2×2 pixel patches so the first trainable layer sees
unit-variance, decorrelated inputs (fewer steps to fit); with W = [E Λ^-1/2 ; −E Λ^-1/2] (E, Λ the
eigenvectors/values of the patch covariance) both signs survive the GELU. Pooling before BN halves the
BN cost; the small logit scale (1/9) acts as a temperature that keeps early logits soft. Label smoothing,
flip + translate augmentation, test-time flip and the schedule live in the task and the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tunelab.models.scratch import register_architecture

PATCH = 2


@dataclass(frozen=True)
class FastCNNSettings:
    widths: tuple[int, int, int] = (32, 64, 128)  # airbench94 uses (64, 256, 256)
    logit_scale: float = 1 / 9
    bn_momentum: float = 0.4  # PyTorch convention: weight of the new batch in the running stats
    whiten_eps: float = 5e-4
    in_channels: int = 3  # from the data
    image_size: int = 32  # from the data
    classes: int = 10  # from the data

    def __post_init__(self) -> None:
        if len(self.widths) != 3:
            raise ValueError("widths: give three widths, one per conv group")


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int, momentum: float):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding="same", bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(c_out, momentum=momentum)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding="same", bias=False)
        self.norm2 = nn.BatchNorm2d(c_out, momentum=momentum)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))  # (B, c_out, H/2, W/2)
        return self.act(self.norm2(self.conv2(x)))


class FastCNN(nn.Module):
    def __init__(self, settings: FastCNNSettings):
        super().__init__()
        self.settings = settings
        patch_dim = settings.in_channels * PATCH * PATCH
        self.whiten = nn.Conv2d(settings.in_channels, 2 * patch_dim, PATCH, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # set from the data, never trained
        w1, w2, w3 = settings.widths
        self.groups = nn.Sequential(ConvGroup(2 * patch_dim, w1, settings.bn_momentum),
                                    ConvGroup(w1, w2, settings.bn_momentum), ConvGroup(w2, w3, settings.bn_momentum))
        self.act = nn.GELU()
        self.head = nn.Linear(w3, settings.classes, bias=False)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Whitening weights from (N, C, H, W) normalised training images: the covariance Σ of all 2×2
        patches, Σ = E Λ Eᵀ, filters E Λ^-1/2 and their negatives."""
        c = self.settings.in_channels
        patches = images.unfold(2, PATCH, 1).unfold(3, PATCH, 1)  # (N, C, H-1, W-1, 2, 2)
        patches = patches.transpose(1, 3).reshape(-1, c * PATCH * PATCH).double()  # (N·(H-1)·(W-1), 4C): (c, kh, kw)
        patches = patches - patches.mean(dim=0)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + self.settings.whiten_eps)[:, None])
        filters = filters.reshape(-1, c, PATCH, PATCH)  # (4C, C, 2, 2), the same (c, kh, kw) order as a conv weight
        self.whiten.weight.copy_(torch.cat([filters, -filters]).float())

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act(self.whiten(x))  # (B, 8C, H-1, W-1)
        h = self.groups(h)  # (B, w3, H/8, W/8)
        h = torch.amax(h, dim=(2, 3))  # (B, w3)
        return self.head(h) * self.settings.logit_scale  # (B, K)


register_architecture("fastcnn", FastCNNSettings, lambda settings, vocab_size=None: FastCNN(settings))
