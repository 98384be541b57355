"""Bad rows: counted per reason with their first row numbers, then skipped or fatal by `data.on_error`.

Row numbers are 0-based positions in the table as read (a JSONL file's line among its non-empty lines, a
CSV's data row), so a user can find the row in the file. `data.on_error: skip` (default) drops bad rows
and prints one warning line per split; `fail` stops at once with one line naming the first bad row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

FIRST_ROWS = 5  # row numbers kept per bad-row reason


@dataclass
class BadRows:
    """reason -> count and the first row numbers."""

    counts: dict[str, int] = field(default_factory=dict)
    first: dict[str, list[int]] = field(default_factory=dict)

    def add(self, reason: str, row: int) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        rows = self.first.setdefault(reason, [])
        if len(rows) < FIRST_ROWS:
            rows.append(row)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {reason: {"count": n, "first_rows": self.first[reason]} for reason, n in self.counts.items()}

    def describe(self) -> str:
        return "; ".join(f"{n} {reason} (rows {', '.join(map(str, self.first[reason]))})"
                         for reason, n in self.counts.items())

    def merge(self, other: BadRows) -> None:
        for reason, count in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + count
            rows = self.first.setdefault(reason, [])
            rows.extend(r for r in other.first[reason] if r not in rows)
            del rows[FIRST_ROWS:]


def enforce(bad: BadRows, policy: str, where: str, warn: bool = True) -> None:
    """`fail`: one line naming the first bad row; `skip`: one warning line (nothing when all rows are good;
    `warn=False` when the task's pre-flight report lists them instead)."""
    if not bad.total:
        return
    if policy == "fail":
        reason = next(iter(bad.counts))
        raise TunelabError(f"{where}: row {bad.first[reason][0]}: {reason.replace('_', ' ')} "
                           f"(data.on_error: fail; with skip such rows are dropped and counted)")
    if not warn:
        return
    from tunelab.progress import console

    console.print(f"[yellow]{where}: {bad.total} bad rows skipped: {bad.describe()}[/]")


def bad_row_counts(bad: dict[str, BadRows]) -> dict[str, int]:
    """The summary's metrics: bad_train_rows, bad_eval_rows."""
    return {f"bad_{split}_rows": rows.total for split, rows in bad.items()}


def write_bad_rows(folder: Path, bad: dict[str, BadRows]) -> None:
    """bad_rows.json in the run folder: per split, per kind, the count and the first row numbers."""
    from tunelab.rundir import atomic_write_json

    atomic_write_json(Path(folder) / "bad_rows.json", {split: rows.as_dict() for split, rows in bad.items()})
