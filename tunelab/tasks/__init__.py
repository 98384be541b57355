"""Tasks: recipe `task:` names resolve through `tunelab.tasks.registry` (torch-free)."""

from tunelab.tasks.registry import TASK_REGISTRY, default_metric, task_class

__all__ = ["TASK_REGISTRY", "default_metric", "task_class"]
