"""Comparison tables across runs: markdown and CSV files, and a rich table on the terminal."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from tunelab.rundir import atomic_write_text

COLUMNS = [("label", "run"), ("variant", "variant"), ("accuracy", "accuracy"), ("macro_f1", "macro-F1"),
           ("mcc", "MCC"), ("trainable_params", "trainable"), ("samples_per_s", "samples/s"),
           ("train_seconds", "train s"), ("wall_seconds", "wall s")]


def comparison_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for summary in summaries:
        metrics = summary.get("metrics", {})
        row = {key: summary.get(key, metrics.get(key)) for key, _ in COLUMNS}
        rows.append(row)
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def markdown_table(rows: list[dict[str, Any]], best_key: str = "accuracy") -> str:
    best = max((r[best_key] for r in rows if r.get(best_key) is not None), default=None)
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [_fmt(row[key]) for key, _ in COLUMNS]
        if best is not None and row.get(best_key) == best and len(rows) > 1:
            cells[0] = f"**{cells[0]}** (best)"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[key for key, _ in COLUMNS])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_comparison(outcomes, folder: Path) -> None:
    from tunelab.report.html import write_report

    rows = comparison_rows([o.summary for o in outcomes])
    atomic_write_text(Path(folder) / "comparison.md", markdown_table(rows) + "\n")
    atomic_write_text(Path(folder) / "comparison.csv", csv_text(rows))
    write_report(outcomes, Path(folder) / "report.html")


def print_comparison(outcomes) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    rows = comparison_rows([o.summary for o in outcomes])
    table = Table(title="results")
    for _, title in COLUMNS:
        table.add_column(title)
    best = max((r["accuracy"] for r in rows if r.get("accuracy") is not None), default=None)
    for row in rows:
        style = "bold green" if len(rows) > 1 and row.get("accuracy") == best else None
        table.add_row(*(_fmt(row[key]) for key, _ in COLUMNS), style=style)
    console.print(table)
