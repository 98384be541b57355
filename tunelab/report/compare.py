"""Comparison tables across runs: markdown, CSV and a rich table on the terminal.

Columns are chosen from the runs, not from a task: the hyper-parameters whose values differ between
the runs' config.yaml, the trainable parameter count, every scalar metric the summaries hold (the
recipe's `eval.metric` first; it decides the best row), then each row against the best row (`vs best`: the
difference, its interval and p; `tunelab.report.verdict`), then speed and time. Runs whose configs differ
only in `train.seed` are folded into one row showing mean ± std (sample std) over the seeds and the t
interval of the mean. The best row is marked only when it beats the runner-up at the chosen alpha.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.eval.direction import lower_is_better  # noqa: F401 (re-exported)
from tunelab.report.runs import RunRecord, is_number, records_from_outcomes
from tunelab.report.verdict import Verdict, judge, versus_text
from tunelab.rundir import atomic_write_text

IGNORED_KEYS = ("name", "description", "output_dir")
IGNORED_PREFIXES = ("variants.",)
SEED_KEY = "train.seed"
STATS = [("trainable_params", "trainable"), ("samples_per_s", "samples/s"), ("train_seconds", "train s"),
         ("wall_seconds", "wall s")]
@dataclass
class Column:
    key: str
    title: str
    kind: str  # label | param | seeds | stat | metric | versus | interval


@dataclass
class Row:
    label: str
    records: list[RunRecord]
    cells: dict[str, Any] = field(default_factory=dict)  # a value, or (mean, std, n) for a seed group
    best: bool = False
    versus: Any = None  # a significance.Difference against the best row, or why there is none
    tied: bool = False  # indistinguishable from the best row (then no row is marked best)


@dataclass
class Comparison:
    columns: list[Column]
    rows: list[Row]
    metric: str | None
    grouped: bool
    verdict: Verdict = field(default_factory=lambda: Verdict(0.05))


def table_config(record: RunRecord) -> dict[str, Any]:
    """Flattened config with lists of rules spread out (adapter.layers.1.rank), for diffing."""
    flat: dict[str, Any] = {}
    for key, value in record.flat_config.items():
        if key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES):
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                flat.update({f"{key}.{i}.{k}": v for k, v in item.items()})
        else:
            flat[key] = value
    return flat


def varying_keys(configs: list[dict[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for c in configs for k in c))
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]


def choose_metric(records: list[RunRecord], metric: str | None) -> str | None:
    """--metric, else the recipes' eval.metric (most common), else the first metric any run reports."""
    if metric:
        return metric
    named = Counter(r.best_metric for r in records if r.best_metric and r.best_metric in r.metrics)
    if named:
        return named.most_common(1)[0][0]
    return next((k for r in records for k in r.metrics), None)


def group_label(labels: list[str]) -> str:
    """lora_s0, lora_s1, lora_s2 -> 'lora'; trial-000, trial-004 -> 'trial-000,004'; others joined."""
    if len(labels) == 1:
        return labels[0]
    common = os.path.commonprefix(labels)
    prefix = re.sub(r"[_\-/. ]+(seed|s)?$", "", common)
    if len(prefix) >= 2 and not common[-1].isdigit():  # 'trial-00' is a cut number, not a name
        return prefix
    numbered = [re.fullmatch(r"(.*?)(\d+)", label) for label in labels]  # trial-000, trial-004 -> trial-000,004
    if all(numbered) and len({m.group(1) for m in numbered}) == 1:
        return numbered[0].group(1) + ",".join(m.group(2) for m in numbered)
    return "+".join(labels)


def summarise(values: list[Any]) -> Any:
    numbers = [v for v in values if is_number(v)]
    if len(values) == 1 or not numbers:
        return values[0]
    if len(set(numbers)) == 1 and len(numbers) == len(values):
        return numbers[0]
    return (statistics.fmean(numbers), statistics.stdev(numbers) if len(numbers) > 1 else 0.0, len(numbers))


def mean_of(cell: Any) -> float | None:
    if isinstance(cell, tuple):
        return cell[0]
    return float(cell) if is_number(cell) else None


def build_comparison(records: list[RunRecord], metric: str | None = None, group_seeds: bool = True,
                     sort: bool = False, alpha: float = 0.05) -> Comparison:
    configs = [table_config(r) for r in records]
    varying = varying_keys(configs)
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        key = json.dumps([config.get(k) for k in varying if k != SEED_KEY], default=str) if group_seeds else str(i)
        groups.setdefault(key, []).append(i)
    grouped = group_seeds and SEED_KEY in varying and any(len(g) > 1 for g in groups.values())
    if not grouped:
        groups = {str(i): [i] for i in range(len(records))}
    metric = choose_metric(records, metric)
    metric_keys = list(dict.fromkeys(([metric] if metric else []) + [k for r in records for k in r.metrics]))
    columns = [Column("label", "run", "label")]
    columns += [Column(k, k, "param") for k in varying if not (grouped and k == SEED_KEY)]
    columns += [Column("seeds", "seeds", "seeds")] if grouped else []
    columns += [Column(k, title, "stat") for k, title in STATS[:1] if any(k in r.summary for r in records)]
    columns += [Column(k, k, "metric") for k in metric_keys]
    if metric and len(groups) > 1:
        columns += [Column("seed_ci", f"{metric} {100 * (1 - alpha):g}% CI (seeds)", "interval")] if grouped else []
        columns += [Column("vs_best", f"vs best ({metric}: Δ [{100 * (1 - alpha):g}% CI], p)", "versus")]
    columns += [Column(k, title, "stat") for k, title in STATS[1:] if any(k in r.summary for r in records)]
    rows = [make_row([records[i] for i in members], [configs[i] for i in members], columns)
            for members in groups.values()]
    mark_best(rows, metric)
    verdict = judge(rows, metric, alpha)
    if sort and metric:
        sign = 1 if lower_is_better(metric) else -1
        rows.sort(key=lambda r: (mean_of(r.cells.get(metric)) is None, sign * (mean_of(r.cells.get(metric)) or 0)))
    return Comparison(columns, rows, metric, grouped, verdict)


def make_row(records: list[RunRecord], configs: list[dict[str, Any]], columns: list[Column]) -> Row:
    labels = [r.label for r in records]
    label = group_label(labels)
    if len(records) == 1 and records[0].trial.get("state") == "PRUNED":
        label += " (pruned)"
    row = Row(label, records)
    for column in columns[1:]:
        if column.kind == "param":
            row.cells[column.key] = configs[0].get(column.key)
        elif column.kind == "seeds":
            row.cells["seeds"] = ",".join(str(c.get(SEED_KEY)) for c in configs)
        elif column.kind in ("versus", "interval"):
            continue  # filled by judge() once every row exists
        elif column.kind == "metric":
            row.cells[column.key] = summarise([r.metrics[column.key] for r in records if column.key in r.metrics]
                                              or [None])
        else:
            row.cells[column.key] = summarise([r.summary.get(column.key) for r in records])
    return row


def mark_best(rows: list[Row], metric: str | None) -> None:
    scored = [(mean_of(r.cells.get(metric)), r) for r in rows] if metric else []
    scored = [(v, r) for v, r in scored if v is not None]
    if len(rows) < 2 or not scored:
        return
    pick = min if lower_is_better(metric) else max
    best_value = pick(v for v, _ in scored)
    next(row for value, row in scored if value == best_value).best = True  # ties: the first row


def fmt(value: Any, kind: str = "metric") -> str:
    if kind == "interval":
        return f"[{value[0]:.4f}, {value[1]:.4f}]" if value else ""
    if isinstance(value, tuple):
        mean, std, _ = value
        return f"{mean:.4f} ± {std:.4f}" if kind == "metric" else f"{fmt(mean, kind)} ± {fmt(std, kind)}"
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}" if kind == "stat" else str(value)
    if isinstance(value, float):
        if kind == "metric":
            return f"{value:.4f}"
        return f"{value:,.1f}" if kind == "stat" else f"{value:g}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def formatted_rows(table: Comparison) -> list[list[str]]:
    """Display cells per row; the best row's label reads '**label** (best)' (markdown-friendly), rows
    indistinguishable from the top one 'label (tied)'."""
    out = []
    for row in table.rows:
        cells = [f"**{row.label}** (best)" if row.best else f"{row.label} (tied)" if row.tied else row.label]
        cells += [versus_text(row) if c.kind == "versus" else fmt(row.cells.get(c.key), c.kind)
                  for c in table.columns[1:]]
        out.append(cells)
    return out


def ranked_by(table: Comparison) -> str:
    """'best by' — or 'ranked by' when the top rows are indistinguishable and no row is best."""
    return "ranked by" if table.verdict.state == "indistinguishable" else "best by"


def markdown_table(table: Comparison) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c.title) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(c) for c in cells) + " |" for cells in formatted_rows(table)]
    direction = "lower" if table.metric and lower_is_better(table.metric) else "higher"
    note = f"\n\n{ranked_by(table)} {table.metric} ({direction} is better)" if table.metric else ""
    seeds = "; rows over several seeds show mean ± std" if table.grouped else ""
    notes = "".join(f"\n\n{text}" for text in table.verdict.notes)
    return "\n".join(lines) + note + seeds + notes


def csv_cells(table: Comparison, row: Row) -> list[Any]:
    """The tests as raw values: seed interval, then vs_best diff, low, high, p, test (or why untested), tied."""
    values: list[Any] = []
    if any(c.kind == "interval" for c in table.columns):
        values += list(row.cells.get("seed_ci") or ("", ""))
    if any(c.kind == "versus" for c in table.columns):
        test = row.versus
        if test is None or isinstance(test, str):
            values += ["", "", "", "", f"not tested: {test}" if test else ""]
        else:
            values += [test.diff, test.low, test.high, test.p, test.test]
        values += [int(row.tied)]
    return values


def csv_text(table: Comparison) -> str:
    """Raw values; a seed group gives <metric> (mean), <metric>_std and n."""
    tests = [c for c in table.columns if c.kind in ("versus", "interval")]
    plain = [c for c in table.columns if c not in tests]
    extra = (["seed_ci_low", "seed_ci_high"] if any(c.kind == "interval" for c in tests) else []) + \
        (["vs_best_diff", "vs_best_low", "vs_best_high", "vs_best_p", "vs_best_test", "tied"]
         if any(c.kind == "versus" for c in tests) else [])
    header = [c.key for c in plain] + (["n"] if table.grouped else []) + extra + ["best", "run_dirs"]
    stds = [c.key for c in plain if any(isinstance(r.cells.get(c.key), tuple) for r in table.rows)]
    header[len(plain):len(plain)] = [f"{k}_std" for k in stds]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in table.rows:
        values = [row.label] + [csv_value(mean_of(v) if isinstance(v, tuple) else v)
                                for v in (row.cells.get(c.key) for c in plain[1:])]
        values += [row.cells[k][1] if isinstance(row.cells.get(k), tuple) else "" for k in stds]
        values += [len(row.records)] if table.grouped else []
        values += [csv_value(v) for v in csv_cells(table, row)]
        values += [int(row.best), ";".join(str(r.path) for r in row.records)]
        writer.writerow(values)
    return buffer.getvalue()


def csv_value(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value)
    return "" if value is None else value


def write_comparison(outcomes, folder: Path, alpha: float = 0.05) -> None:
    """comparison.md, comparison.csv and report.html for the runs of one `tunelab run` (or a sweep)."""
    from tunelab.report.html import write_report

    records = records_from_outcomes(outcomes)
    table = build_comparison(records, alpha=alpha)
    atomic_write_text(Path(folder) / "comparison.md", markdown_table(table) + "\n")
    atomic_write_text(Path(folder) / "comparison.csv", csv_text(table))
    write_report(records, Path(folder) / "report.html", alpha=alpha)


def print_table(table: Comparison, title: str = "results") -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=max(140, 14 * len(table.columns)))
    caption = "\n".join(([f"{ranked_by(table)} {table.metric}"] if table.metric else []) + table.verdict.notes)
    rich_table = Table(title=title, caption=caption or None)
    for column in table.columns:
        rich_table.add_column(column.title, overflow="fold")
    for row, cells in zip(table.rows, formatted_rows(table), strict=True):
        cells[0] = f"{row.label} (best)" if row.best else f"{row.label} (tied)" if row.tied else row.label
        rich_table.add_row(*(escape(c) for c in cells), style="bold green" if row.best else None)
    console.print(rich_table)


def print_comparison(outcomes) -> None:
    print_table(build_comparison(records_from_outcomes(outcomes)))
