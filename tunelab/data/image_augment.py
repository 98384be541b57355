"""Batch augmentation for image classification, on whole tensors (no per-image Python loop).

Randomness comes only from the numpy Generator passed in (the task's checkpointed `generators["augment"]`),
so a resumed run draws exactly the flips and shifts an uninterrupted one would have drawn.

- flip: each image is mirrored left-right with probability 1/2;
- translate t: the batch is reflect-padded by t pixels and each image cropped back at its own offset
  (dy, dx) ∈ {0..2t}², i.e. shifted by up to t pixels, with one advanced-indexing gather for the batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def flip_and_translate(x: torch.Tensor, rng: np.random.Generator, flip: bool, translate: int) -> torch.Tensor:
    """x (B, C, H, W) float -> augmented (B, C, H, W)."""
    batch, _, height, width = x.shape
    if flip:
        mirrored = torch.from_numpy(rng.random(batch) < 0.5)
        x = torch.where(mirrored[:, None, None, None], x.flip(-1), x)
    if translate:
        offsets = torch.from_numpy(rng.integers(0, 2 * translate + 1, size=(batch, 2)))
        padded = F.pad(x, (translate,) * 4, mode="reflect")  # (B, C, H+2t, W+2t)
        rows = offsets[:, :1] + torch.arange(height)  # (B, H)
        cols = offsets[:, 1:] + torch.arange(width)  # (B, W)
        images = torch.arange(batch)[:, None, None]
        x = padded[images, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
    return x.contiguous()
