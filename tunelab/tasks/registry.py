"""Which tasks exist, where their class lives and which metric picks their best checkpoint.

Kept free of torch and transformers so that reading a recipe, comparing run folders or writing a report
does not import the training stack; the task class itself is imported only when a run needs it.
A new task is one file plus one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskInfo:
    target: str  # "module:Class"
    default_metric: str
    description: str


TASK_REGISTRY: dict[str, TaskInfo] = {
    "classification": TaskInfo("tunelab.tasks.classification:ClassificationTask", "accuracy",
                               "sequence classification with any encoder"),
    "sft": TaskInfo("tunelab.tasks.sft:SFTTask", "eval_loss", "supervised fine-tuning of a causal (chat) LM"),
    "image_classification": TaskInfo("tunelab.tasks.image_classification:ImageClassificationTask", "accuracy",
                                     "image classification from scratch (CIFAR-10, Fashion-MNIST, class folders)"),
    "qa": TaskInfo("tunelab.tasks.qa:QATask", "f1", "extractive question answering (SQuAD v1.1 / 2.0)"),
    "lm": TaskInfo("tunelab.tasks.lm:LMTask", "eval_loss", "causal language modelling from scratch (char GPT)"),
    "dpo": TaskInfo("tunelab.tasks.dpo:DPOTask", "reward_accuracy", "preference optimisation (DPO, IPO, SimPO)"),
    "grpo": TaskInfo("tunelab.tasks.grpo:GRPOTask", "eval_reward",
                     "reinforcement fine-tuning with rewards (GRPO, Dr. GRPO, DAPO-style token loss)"),
}


def task_class(name: str) -> Any:
    """The Task subclass registered as `name` (imported on first use)."""
    module, _, cls = TASK_REGISTRY[name].target.partition(":")
    return getattr(importlib.import_module(module), cls)


def default_metric(task: str | None) -> str | None:
    info = TASK_REGISTRY.get(task or "")
    return info.default_metric if info else None
