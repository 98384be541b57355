"""A tiny separable task (two Gaussian blobs, an MLP) to test the loop without transformers."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tunelab.recipes import validate
from tunelab.tasks.base import Task
from tunelab.train.batching import bucketed_batches


class InMemoryTask(Task):
    """Data already in memory as `self.y` (one label per example): nothing to prepare, shuffled batches."""

    pool = 4

    def prepare_data(self, tokenizer=None, tokenizer_id="", cache_dir=None):
        pass

    @property
    def train_size(self):
        return len(self.y)

    def train_batches(self, rng):
        lengths = np.ones(len(self.y), dtype=np.int64)
        return bucketed_batches(lengths, self.config.train.batch_size, self.pool, rng)


class ToyTask(InMemoryTask):
    name = "toy"

    def __init__(self, overrides=None, n=256):
        raw = {"data": {"dataset": "ag_news_demo"}, "train": {"lr": 0.05, "batch_size": 16, "log_every": 1,
                                                               "precision": "fp32", "warmup_ratio": 0.0}}
        for key, value in (overrides or {}).items():
            raw.setdefault(key.split(".")[0], {})[key.split(".")[1]] = value
        super().__init__(validate(raw))
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, size=n)
        x = rng.normal(size=(n, 4)) + 2.5 * (2 * y[:, None] - 1)
        self.x, self.y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)

    def build_model(self, source=None):
        return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))

    def collate(self, index, split="train"):
        index = torch.as_tensor(index)
        return {"x": self.x[index], "labels": self.y[index]}

    def loss_fn(self, model, batch):
        return F.cross_entropy(model(batch["x"]), batch["labels"]), {}

    @torch.no_grad()
    def evaluate(self, model, out_dir=None, autocast=None, prefix=None):
        model.eval()
        accuracy = float((model(self.x).argmax(-1) == self.y).float().mean())
        loss = float(F.cross_entropy(model(self.x), self.y))
        return {"accuracy": accuracy, "loss": loss}

    def periodic_metrics(self):
        return ("accuracy", "loss")

    def batch_tokens(self, batch):
        return len(batch["labels"])
