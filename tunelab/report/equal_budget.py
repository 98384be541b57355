"""Equal-budget comparisons: each run's metric at the same training tokens or seconds, and which runs are
Pareto-optimal in quality against cost.

A run that trained twice as long is not better for being better at the end. The periodic evaluations
(`train.eval_every`) log the metric together with the training tokens and seconds spent so far, so every
run has a curve metric(budget). At a budget b the value is the last evaluation at or before b (what you
would have if you had stopped there); no interpolation between evaluations. The budgets shown run evenly
from the first budget at which every run has been evaluated to the largest budget every run reached, so
each cell is measured, never extrapolated.

Runs written before the evaluations logged their budget get it estimated from their step and the run's
mean rate (budget(step) = step / steps · total); those cells are marked "~".

Pareto front over (cost, quality): run i is on the front when no other run is at most as costly and at
least as good, strictly better in one of the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunelab.eval.direction import lower_is_better
from tunelab.report.runs import RunRecord, is_number

AXES = {"tokens": ("tokens", "train_tokens", "training tokens"),
        "seconds": ("train_seconds", "train_seconds", "training seconds")}
POINTS = 3  # budgets shown


@dataclass
class Curve:
    """One run's metric against its budget: [(budget, value), ...] in budget order."""

    label: str
    points: list[tuple[float, float]]
    estimated: bool = False  # budgets derived from the step and the mean rate
    total: float = 0.0  # the run's whole training budget
    final: float | None = None  # summary.json's metric (the final evaluation)


@dataclass
class EqualBudget:
    axis: str
    metric: str
    budgets: list[float]
    curves: list[Curve]
    cells: dict[str, list[float | None]] = field(default_factory=dict)  # label -> value per budget
    best: list[str | None] = field(default_factory=list)  # per budget: the best label
    pareto: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)  # runs with no periodic evaluation of the metric


def run_total(record: RunRecord, axis: str) -> float | None:
    """The whole training budget: summary.json's train_tokens / train_seconds (older runs: tokens/s x s)."""
    _, summary_key, _ = AXES[axis]
    value = record.summary.get(summary_key)
    if not is_number(value) and axis == "tokens":
        rate, seconds = record.summary.get("tokens_per_s"), record.summary.get("train_seconds")
        value = rate * seconds if is_number(rate) and is_number(seconds) else None
    return float(value) if is_number(value) else None


def curve_of(record: RunRecord, axis: str, metric: str) -> Curve | None:
    """The periodic evaluations of `metric` with their budget, or None when the run has none."""
    history_key = AXES[axis][0]
    total = run_total(record, axis)
    steps = record.summary.get("steps")
    points, estimated = [], False
    for line in record.history:
        scores = line.get("eval")
        if not isinstance(scores, dict) or not is_number(scores.get(metric)):
            continue
        budget = line.get(history_key)
        if not is_number(budget):
            if total is None or not is_number(steps) or not steps or not is_number(line.get("step")):
                continue
            budget, estimated = line["step"] / steps * total, True
        points.append((float(budget), float(scores[metric])))
    if not points:
        return None
    final = record.metrics.get(metric)
    return Curve(record.label, sorted(points), estimated, total if total is not None else points[-1][0], final)


def value_at(curve: Curve, budget: float) -> float | None:
    """The last evaluation at or before `budget` (None when the first one came later)."""
    value = None
    for spent, metric_value in curve.points:
        if spent <= budget * (1 + 1e-9):
            value = metric_value
    return value


def pareto_front(costs: dict[str, float], values: dict[str, float], lower_better: bool) -> set[str]:
    """Labels that no other run dominates (no more costly and no worse, strictly better in one)."""
    sign = -1.0 if lower_better else 1.0

    def dominates(a: str, b: str) -> bool:
        no_worse = costs[a] <= costs[b] and sign * values[a] >= sign * values[b]
        return no_worse and (costs[a] < costs[b] or sign * values[a] > sign * values[b])

    return {b for b in costs if not any(dominates(a, b) for a in costs if a != b)}


def equal_budget(records: list[RunRecord], axis: str, metric: str, points: int = POINTS) -> EqualBudget:
    """The table behind `tunelab compare --by tokens|seconds` and the report's cost section."""
    curves, skipped = [], []
    for record in records:
        curve = curve_of(record, axis, metric)
        (curves.append(curve) if curve is not None else skipped.append(record.label))
    reached = min((c.points[-1][0] for c in curves), default=0.0)
    start = max((c.points[0][0] for c in curves), default=0.0)
    budgets = [start + (reached - start) * i / (points - 1) for i in range(points)] if reached > start else \
        [reached] if curves else []
    table = EqualBudget(axis, metric, budgets, curves, skipped=skipped)
    lower = lower_is_better(metric)
    for curve in curves:
        table.cells[curve.label] = [value_at(curve, b) for b in budgets]
    for i in range(len(budgets)):
        known = {label: cells[i] for label, cells in table.cells.items() if cells[i] is not None}
        table.best.append((min if lower else max)(known, key=known.get) if len(known) > 1 else None)
    finals = {r.label: r.metrics[metric] for r in records if metric in r.metrics and run_total(r, axis) is not None}
    table.pareto = pareto_front({label: run_total(r, axis) for r in records for label in [r.label] if label in finals},
                                finals, lower) if finals else set()
    return table


def budget_text(value: float, axis: str) -> str:
    if axis == "seconds":
        return f"{value:,.1f} s"
    return f"{value / 1e6:.2f}M tok" if value >= 1e6 else f"{value:,.0f} tok"


def table_rows(table: EqualBudget) -> tuple[list[str], list[list[str]]]:
    """Header and rows as text: run, the metric at each budget (* best there), final, total cost, Pareto."""
    header = ["run"] + [f"{table.metric} @ {budget_text(b, table.axis)}" for b in table.budgets] + \
        [f"final {table.metric}", f"total {AXES[table.axis][2]}", "pareto"]
    rows = []
    for curve in table.curves:
        mark = "~" if curve.estimated else ""
        cells = [("-" if v is None else f"{mark}{v:.4g}") + (" *" if table.best[i] == curve.label else "")
                 for i, v in enumerate(table.cells[curve.label])]
        final = "-" if curve.final is None else f"{curve.final:.4g}"
        rows.append([curve.label, *cells, final, budget_text(curve.total, table.axis),
                     "yes" if curve.label in table.pareto else ""])
    return header, rows


def notes(table: EqualBudget) -> list[str]:
    """The lines under the table: how to read it, and what it could not show."""
    lines = [f"Each cell: the last periodic evaluation at or before that many {AXES[table.axis][2]} "
             f"(from the first budget at which every run was evaluated to the largest all reached; "
             "* marks the best there). "
             "No significance test here: periodic evaluations keep no per-example predictions."]
    if any(c.estimated for c in table.curves):
        lines.append("~: budget estimated from the step and the run's mean rate (the run predates logged budgets).")
    if table.skipped:
        lines.append(f"No periodic evaluation of {table.metric} (set train.eval_every): {', '.join(table.skipped)}.")
    return lines


def markdown(table: EqualBudget) -> str:
    header, rows = table_rows(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines + [""] + notes(table))


def csv_rows(table: EqualBudget) -> list[list[Any]]:
    header, rows = table_rows(table)
    return [header, *rows]
