"""The contract between a task and the training loop.

A task knows its data, its model, its loss and its evaluation; the loop in `tunelab.train.loop` knows
nothing else. A new task (qa, dpo, grpo, lm, vision) is one file implementing this class, one line in
`tunelab.tasks.registry`, and a recipe.

What the loop relies on:
- `train_batches(rng)` is a pure function of the generator it is handed (one per (seed, epoch)), so a
  resumed run replays the same order;
- `loss_fn` returns the *mean* loss over the `loss_weight(batch)` items it averages (examples, target
  tokens, pairs). The loop turns means back into one exact mean over a whole optimizer step:
      loss_step = Σ_j w_j · loss_j / Σ_j w_j
  so 2 micro-batches of 4 give the update of one batch of 8 even when rows differ in length;
- `evaluate(model, out_dir, autocast)` with `out_dir=None` (periodic evals) returns at least the names in
  `periodic_metrics()`; eval.metric is checked against them before training starts;
- `make_batch(model, index, step)` builds a training batch; tasks whose batches depend on the current
  model (GRPO rollouts) set `batches_need_model` and the loop calls it under no_grad in eval mode;
- `generators` holds every numpy Generator the data path draws from (augmentation, sampling), so
  checkpoints can store and restore them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tunelab.config import RunConfig
from tunelab.tasks.registry import TASK_REGISTRY

if TYPE_CHECKING:
    from tunelab.data.preflight import Preflight
    from tunelab.models.source import ModelSource

Autocast = Callable[[], AbstractContextManager[Any]] | None
Prefix = Callable[[np.ndarray], AbstractContextManager[Any]] | None


class Task(ABC):
    name: str = "task"
    #: True when a training batch depends on the current model (rollouts): `make_batch` runs under no_grad
    batches_need_model: bool = False
    #: False in `tunelab plan`: what the task would cache from the model (DPO's reference log-probs) stays
    #: in memory, so the run the plan predicts pays for it as a fresh run does
    persist_model_outputs: bool = True

    def __init__(self, config: RunConfig):
        self.config = config
        self.generators: dict[str, np.random.Generator] = {}
        self.preflight_report: Preflight | None = None  # set by the runner after prepare_data

    @property
    def default_metric(self) -> str:
        """The metric for best checkpoint and early stopping when the recipe names none."""
        info = TASK_REGISTRY.get(self.name)
        return info.default_metric if info else "loss"

    # ----- model -----
    def model_source(self) -> ModelSource:
        """Where the model comes from: a pretrained model + tokenizer (model.name), or a from-scratch
        architecture (model.arch) whose tokenizer the task builds from its data."""
        from tunelab.models.source import model_source_for

        return model_source_for(self.config.model)

    @abstractmethod
    def build_model(self, source: ModelSource) -> nn.Module:
        """The model with this task's head (new heads initialised from the run seed)."""

    def artifact_state(self) -> dict[str, Any]:
        """What `build_model` needs besides the config to rebuild the model without the data (label
        names, vocabulary size); saved as task_state.json next to the artifact."""
        return {}

    def load_artifact_state(self, state: dict[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Take back `artifact_state()` before `build_model` when reloading a finished run."""

    # ----- data -----
    @abstractmethod
    def prepare_data(self, tokenizer: Any, tokenizer_id: str, cache_dir: Path | None) -> None:
        """Read, split and tokenise once; afterwards `train_size` and the batch functions work.
        `tokenizer` is None for from-scratch models: the task builds its own and keeps it in `self.tokenizer`."""

    @property
    @abstractmethod
    def train_size(self) -> int: ...

    @abstractmethod
    def train_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Index batches for one epoch; a pure function of `rng` (resume replays it)."""

    def train_lengths(self) -> np.ndarray | None:
        """Tokens per training example, for tasks whose batches are padded to their longest member
        (`tunelab plan` measures memory on the longest ones); None when every batch has one shape."""
        return None

    @abstractmethod
    def collate(self, index: np.ndarray, split: str = "train") -> dict[str, torch.Tensor]:
        """Tensors for one batch of examples."""

    def make_batch(self, model: nn.Module, index: np.ndarray, step: int) -> dict[str, torch.Tensor]:
        """The training batch for `index` at optimizer step `step`; by default just `collate`."""
        return self.collate(index)

    def prefix_inputs(self, split: str = "train") -> tuple[list[np.ndarray], Any, np.ndarray] | None:
        """(batches in length order, collate, lengths) over the split ("train" or "eval"), for the
        frozen-prefix cache; None when the task's model input is not token ids + attention mask. A task
        that returns eval inputs must honour `evaluate(..., prefix=)`."""
        return None

    def batch_samples(self, index: np.ndarray) -> int:
        """Examples in a batch (a packed row holds several)."""
        return len(index)

    def batch_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Real (unpadded) tokens in a batch, for tokens/s."""
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else 0

    def preflight(self) -> Preflight | None:
        """What the model will be trained on, checked (tunelab.data.preflight): the first example, balance,
        lengths, overlap, problems. Called after `prepare_data`; None when the task has nothing to show."""
        return None

    # ----- loss -----
    @abstractmethod
    def loss_fn(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean loss over the batch's `loss_weight` items, plus scalars to log (means over the same items)."""

    def loss_weight(self, batch: dict[str, torch.Tensor]) -> float:
        """How many items `loss_fn` averages over: examples by default; target tokens for language models."""
        return float(len(next(iter(batch.values()))))

    # ----- evaluation -----
    @abstractmethod
    def evaluate(self, model: nn.Module, out_dir: Path | None = None, autocast: Autocast = None,
                 prefix: Prefix = None) -> dict[str, Any]:
        """Full evaluation on the eval split under `autocast()`; writes predictions/plots into out_dir when
        given (the final evaluation), and may add metrics that only the final evaluation computes.
        `prefix(index)`, when given, is a context in which the model's forward for those eval examples
        starts from cached frozen-layer states (same result, fewer FLOPs)."""

    @abstractmethod
    def periodic_metrics(self) -> tuple[str, ...]:
        """Names of the scalar metrics `evaluate(model, None, ...)` returns: what eval.metric may name."""
