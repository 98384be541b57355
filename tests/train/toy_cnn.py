"""A toy image task with the parts that make resume hard: BatchNorm running statistics, random
augmentation from a numpy generator and from torch, dropout; plus a from-scratch architecture."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tunelab.recipes import validate

from .toy_task import InMemoryTask


@dataclass(frozen=True)
class ToyCNNSettings:
    channels: int = 4
    classes: int = 2


class ToyCNN(nn.Module):
    def __init__(self, settings: ToyCNNSettings):
        super().__init__()
        self.conv = nn.Conv2d(1, settings.channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(settings.channels)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(settings.channels, settings.classes)

    def forward(self, x):
        h = F.relu(self.norm(self.conv(x)))  # (B, C, 6, 6)
        return self.head(self.drop(h.mean(dim=(2, 3))))


def build_toy_cnn(settings: ToyCNNSettings, vocab_size=None) -> ToyCNN:
    return ToyCNN(settings)


class ToyCNNTask(InMemoryTask):
    name = "toy_cnn"
    pool = 2

    def __init__(self, config=None, n=96):
        config = config or validate({"data": {"dataset": "x"}, "train": {"lr": 0.05, "batch_size": 8,
                                                                         "precision": "fp32", "log_every": 1}})
        super().__init__(config)
        rng = np.random.default_rng(0)
        self.y = rng.integers(0, 2, size=n)
        images = rng.normal(size=(n, 1, 6, 6)).astype(np.float32)
        images[self.y == 1, :, :3] += 1.5  # class 1: bright top half
        self.images = images
        self.generators = {"augment": np.random.default_rng(1234)}

    def build_model(self, source=None):
        from tunelab.models.scratch import build_scratch_model

        arch = getattr(source, "arch", None) or {"type": "toy_cnn"}
        return build_scratch_model(arch)

    def collate(self, index, split="train"):
        x = torch.from_numpy(self.images[index])
        if split == "train":  # random flips (numpy generator) and noise (torch RNG)
            flip = torch.from_numpy(self.generators["augment"].random(len(index)) < 0.5)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            x = x + 0.1 * torch.randn_like(x)
        return {"x": x, "labels": torch.from_numpy(self.y[index])}

    def loss_fn(self, model, batch):
        return F.cross_entropy(model(batch["x"]), batch["labels"]), {}

    @torch.no_grad()
    def evaluate(self, model, out_dir=None, autocast=None, prefix=None):
        model.eval()
        batch = self.collate(np.arange(len(self.y)), split="eval")
        logits = model(batch["x"])
        return {"accuracy": float((logits.argmax(-1) == batch["labels"]).float().mean()),
                "loss": float(F.cross_entropy(logits, batch["labels"]))}

    def periodic_metrics(self):
        return ("accuracy", "loss")

    def batch_tokens(self, batch):
        return 0


def register() -> None:
    from tunelab.models.scratch import register_architecture

    register_architecture("toy_cnn", ToyCNNSettings, build_toy_cnn)
