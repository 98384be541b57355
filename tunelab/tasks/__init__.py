"""Task registry: recipe `task:` names resolve here."""

from tunelab.tasks.base import Task
from tunelab.tasks.classification import ClassificationTask
from tunelab.tasks.sft import SFTTask

TASKS: dict[str, type[Task]] = {"classification": ClassificationTask, "sft": SFTTask}

__all__ = ["TASKS", "Task"]
