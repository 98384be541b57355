"""The contract between a task and the training loop.

A task knows its data, its model head, its loss and its evaluation; the loop in
`tunelab.train.loop` knows nothing else. A new task (qa, sft, dpo, grpo, lm, vision) is one file
implementing this class plus a recipe.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tunelab.config import RunConfig


class Task(ABC):
    name: str = "task"
    #: metric the loop uses for best checkpoint and early stopping when the recipe names none
    default_metric: str = "accuracy"

    def __init__(self, config: RunConfig):
        self.config = config

    @abstractmethod
    def build_model(self, model_path: Path) -> nn.Module:
        """Load the pretrained model with this task's head (new heads initialised from the run seed)."""

    @abstractmethod
    def prepare_data(self, tokenizer: Any, tokenizer_id: str, cache_dir: Path | None) -> None:
        """Read, split and tokenise once; afterwards `train_size` and the batch functions work."""

    @property
    @abstractmethod
    def train_size(self) -> int: ...

    @abstractmethod
    def train_batches(self, seed: int) -> list[np.ndarray]:
        """Index batches for one epoch; must be a pure function of `seed` (resume replays it)."""

    @abstractmethod
    def collate(self, index: np.ndarray, split: str = "train") -> dict[str, torch.Tensor]:
        """Tensors for one batch of examples."""

    @abstractmethod
    def loss_fn(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean loss over the batch, plus cheap scalars to log."""

    @abstractmethod
    def evaluate(self, model: nn.Module, out_dir: Path | None = None) -> dict[str, Any]:
        """Full evaluation on the eval split; writes predictions/plots into out_dir when given."""

    def prefix_inputs(self) -> tuple[list[np.ndarray], Any, np.ndarray] | None:
        """(batches in length order, collate, lengths) over the training set, for the frozen-prefix
        cache; None when the task's model input is not token ids + attention mask."""
        return None

    def batch_samples(self, index: np.ndarray) -> int:
        """Examples in a batch (a packed row holds several)."""
        return len(index)

    def batch_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Real (unpadded) tokens in a batch, for tokens/s."""
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else 0
