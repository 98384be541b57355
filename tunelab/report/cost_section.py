"""The report's "Quality vs cost" section: the final metric against training seconds and tokens with the
Pareto front, and the metric at equal training seconds (`tunelab.report.equal_budget`)."""

from __future__ import annotations

import html

from tunelab.eval.direction import lower_is_better
from tunelab.report.equal_budget import AXES, equal_budget, notes, pareto_front, run_total, table_rows
from tunelab.report.plots import pareto_png
from tunelab.report.runs import RunRecord
from tunelab.report.sections import embed


def cost_section(records: list[RunRecord], metric: str | None) -> str:
    """"" for fewer than two runs with the metric and a cost; else the plot and the equal-seconds table."""
    if not metric:
        return ""
    lower = lower_is_better(metric)
    panels = {}
    for axis in AXES:
        points = {r.label: (run_total(r, axis), r.metrics[metric]) for r in records
                  if metric in r.metrics and run_total(r, axis)}
        if len(points) >= 2:
            front = pareto_front({k: c for k, (c, _) in points.items()}, {k: v for k, (_, v) in points.items()}, lower)
            panels[AXES[axis][2]] = (points, front)
    if not panels:
        return ""
    parts = [embed(pareto_png(panels, metric, lower), "quality against cost, Pareto front")]
    table = equal_budget(records, "seconds", metric)
    if len(table.curves) >= 2:
        header, rows = table_rows(table)
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        parts.append(f"<h3>{html.escape(metric)} at equal training seconds</h3>"
                     f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        parts += [f"<p class='muted'>{html.escape(line)}</p>" for line in notes(table)]
    return "".join(parts)
