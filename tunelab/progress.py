"""One place that builds rich progress bars, so every long step (conversion, tokenising, training,
evaluation) shows a bar with ETA, and tests or pipes can silence them with TUNELAB_QUIET=1."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

console = Console(stderr=True)


def progress_enabled() -> bool:
    return os.environ.get("TUNELAB_QUIET", "") in ("", "0") and sys.stderr.isatty()


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not progress_enabled(),
        transient=False,
    )


class Bar:
    """A handle on one progress task: advance it and show a short status (loss, lr) beside it."""

    def __init__(self, progress: Progress, task_id: int):
        self._progress = progress
        self._task_id = task_id

    def advance(self, n: float = 1, status: str | None = None) -> None:
        if status is None:
            self._progress.advance(self._task_id, n)
        else:
            self._progress.update(self._task_id, advance=n, status=status)


@contextmanager
def progress_bar(description: str, total: float | None) -> Iterator[Bar]:
    """Context manager yielding a `Bar`; the bar is removed from the screen state when it ends."""
    with make_progress() as progress:
        task_id = progress.add_task(description, total=total, status="")
        yield Bar(progress, task_id)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (like rich.progress.track, but silenced by TUNELAB_QUIET)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total) as bar:
        for item in items:
            yield item
            bar.advance()
