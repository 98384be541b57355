"""Which row of a comparison is best, and is it better than chance? Tests every row against the best row by
value and decides what the table may claim (tests in `tunelab.report.significance`):

- two single runs with per-example scores on the same examples: McNemar (accuracy) or the paired bootstrap
  (any other per-example metric); runs evaluated on different examples get no paired test;
- two seed groups: Welch's t-test over the seeds' metric values;
- anything else (a task that writes no per-example file, a seed group against one run): not tested.

The best row keeps its mark only when it beats the runner-up with p < alpha. When it does not, no row is
marked best: the best row and every row not significantly different from it are "tied", and the note says the
top runs are indistinguishable. When the runner-up cannot be tested, the best row is marked by value alone and
the note says so. Runs that made the very same predictions on the same examples are named in a note
(two trials with identical scores are usually one model, e.g. a setting that never reached the loss);
runs without per-example files whose every summary metric is equal are named too.
No multiple-comparison correction is applied: each p is one pairwise test against the best row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunelab.eval.direction import lower_is_better
from tunelab.report.per_example import ExampleScores, read_example_scores, scores_for_metric
from tunelab.report.runs import RunRecord
from tunelab.report.significance import (
    Difference,
    accuracy_difference,
    paired_bootstrap,
    seed_interval,
    welch_difference,
)

ScoreCache = dict[str, ExampleScores | str]  # run path -> its per-example scores, read once per comparison

if TYPE_CHECKING:  # compare.py imports this module; the Row type only matters to readers and checkers
    from tunelab.report.compare import Row


@dataclass
class Verdict:
    """What the table may claim about its best row, with the sentences that say it."""

    alpha: float
    state: str = ""  # best | indistinguishable | untested | "" (fewer than two rows with the metric)
    notes: list[str] = field(default_factory=list)


def metric_value(row: Row, metric: str) -> float | None:
    cell = row.cells.get(metric)
    if isinstance(cell, tuple):
        return cell[0]
    return float(cell) if isinstance(cell, int | float) and not isinstance(cell, bool) else None


def paired_difference(record: RunRecord, reference: RunRecord, metric: str, alpha: float,
                      cache: ScoreCache) -> Difference | str:
    """record − reference on the same examples, or the reason there is no paired test."""
    mine = scores_for_metric(record, cached_scores(record, cache), metric)
    theirs = scores_for_metric(reference, cached_scores(reference, cache), metric)
    if isinstance(mine, str) or isinstance(theirs, str):
        return mine if isinstance(mine, str) else theirs
    if mine.examples != theirs.examples:
        return f"evaluated on different examples than {reference.label}: no paired test"
    if metric == "accuracy" and mine.correct is not None and theirs.correct is not None:
        return accuracy_difference(mine.correct, theirs.correct, alpha)
    return paired_bootstrap(mine.statistics[metric], theirs.statistics[metric], mine.n, alpha)


def seed_difference(row: Row, reference: Row, metric: str, alpha: float) -> Difference | str:
    values = [[r.metrics[metric] for r in group.records if metric in r.metrics] for group in (row, reference)]
    found = welch_difference(values[0], values[1], alpha)
    return found if found is not None else "needs 2 or more seeds on both sides"


def versus(row: Row, reference: Row, metric: str, alpha: float, cache: ScoreCache) -> Difference | str:
    if len(row.records) == 1 and len(reference.records) == 1:
        return paired_difference(row.records[0], reference.records[0], metric, alpha, cache)
    if len(row.records) > 1 and len(reference.records) > 1:
        return seed_difference(row, reference, metric, alpha)
    return "a seed group against a single run: not tested"


def cached_scores(record: RunRecord, cache: ScoreCache) -> ExampleScores | str:
    key = str(record.path)
    if key not in cache:
        cache[key] = read_example_scores(record)
    return cache[key]


def judge(rows: list[Row], metric: str | None, alpha: float) -> Verdict:
    """Fill each row's `versus` (a Difference against the best row, or why not), `tied` and seed interval."""
    verdict = Verdict(alpha)
    cache: ScoreCache = {}
    records = [r for row in rows for r in row.records]
    verdict.notes += identical_notes(records, cache)
    scored = [row for row in rows if metric and metric_value(row, metric) is not None]
    for row in scored:
        if len(row.records) > 1:
            row.cells["seed_ci"] = seed_interval([r.metrics[metric] for r in row.records if metric in r.metrics],
                                                 alpha)
    best = next((row for row in scored if row.best), None)
    if best is None or len(scored) < 2:
        return verdict
    sign = 1 if lower_is_better(metric) else -1
    ranking = [best] + sorted((r for r in scored if r is not best), key=lambda r: sign * metric_value(r, metric))
    for row in ranking[1:]:
        row.versus = versus(row, best, metric, alpha, cache)
    runner_up = ranking[1]
    verdict.notes.insert(0, decide(best, runner_up, ranking, metric, alpha, verdict))
    return verdict


def decide(best: Row, runner_up: Row, ranking: list[Row], metric: str, alpha: float, verdict: Verdict) -> str:
    """Mark best only on a significant win over the runner-up; say which rows are tied otherwise."""
    test = runner_up.versus
    if isinstance(test, str):
        verdict.state = "untested"
        return f"best by {metric} value only, not tested for significance against {runner_up.label}: {test}"
    against = f"{best.label} vs {runner_up.label}: {test.test}, {p_text(test.p)}"
    if test.p < alpha:
        verdict.state = "best"
        return f"{best.label} is best by {metric}, better than the runner-up at α = {alpha:g} ({against})"
    verdict.state = "indistinguishable"
    best.best = False
    tied = [best] + [r for r in ranking[1:] if isinstance(r.versus, Difference) and r.versus.p >= alpha]
    for row in tied:
        row.tied = True
    return (f"no best row: the top runs ({', '.join(r.label for r in tied)}) are indistinguishable by {metric} "
            f"at α = {alpha:g} ({against}); their difference may be chance")


def identical_notes(records: list[RunRecord], cache: ScoreCache) -> list[str]:
    """'runs A and B made identical predictions on all N examples' for each set of identical runs; for runs
    with no per-example file (dpo, lm), runs whose every summary metric is equal, to the last digit."""
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        scores = cached_scores(record, cache)
        if isinstance(scores, ExampleScores):
            groups.setdefault(f"{scores.examples}:{scores.predictions}", []).append(record)
        elif record.metrics:
            groups.setdefault(json.dumps(record.metrics, sort_keys=True), []).append(record)
    notes = []
    for members in (m for m in groups.values() if len(m) > 1):
        names = ", ".join(r.label for r in members[:-1]) + f" and {members[-1].label}"
        scores = cached_scores(members[0], cache)
        if isinstance(scores, ExampleScores):
            notes.append(f"runs {names} made identical predictions on all {scores.n} examples ({scores.source})")
        else:
            notes.append(f"runs {names} report identical values of all {len(members[0].metrics)} metrics; their "
                         f"predictions cannot be compared ({scores})")
    return notes


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def versus_text(row: Row) -> str:
    """The `vs best` cell: Δ [interval] p (test), the reason there is no test, or the row's own role."""
    if row.best or (row.tied and row.versus is None):
        return "reference"
    test = row.versus
    if test is None:
        return ""
    if isinstance(test, str):
        return f"not tested: {test}"
    interval = f" [{test.low:+.4f}, {test.high:+.4f}]" if test.low is not None else ""
    return f"{test.diff:+.4f}{interval}, {p_text(test.p)} ({test.test}, n={test.n})"
