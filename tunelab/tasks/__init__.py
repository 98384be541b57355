"""Task registry: recipe `task:` names resolve here."""

from tunelab.tasks.base import Task
from tunelab.tasks.classification import ClassificationTask

TASKS: dict[str, type[Task]] = {"classification": ClassificationTask}

__all__ = ["TASKS", "Task"]
