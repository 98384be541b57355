"""A static, self-contained HTML report: comparison table, config differences, loss/metric curves, sweep
plots, confusion matrices, adapter heat maps and norms, generations side by side.

One file, offline: plots are PNGs embedded as data URIs; the only script is inline (click a column
header to sort) and is pinned by its sha256 in the page's Content-Security-Policy, so even a string
that slipped through unescaped could not run. Everything that comes from runs (labels, config values,
model generations) passes through `html.escape`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
from pathlib import Path
from typing import Any

import yaml

from tunelab.report.code_section import code_section
from tunelab.report.compare import (
    Comparison,
    build_comparison,
    fmt,
    formatted_rows,
    lower_is_better,
    mean_of,
    table_config,
    varying_keys,
)
from tunelab.report.cost_section import cost_section
from tunelab.report.runs import RunRecord, records_from_outcomes
from tunelab.report.sections import (
    adapter_section,
    confusion_section,
    curves_section,
    generations_section,
    misclassified_section,
    ranked_records,
    stage_eval_section,
    sweep_section,
)
from tunelab.rundir import atomic_write_text

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3;cursor:pointer}td:first-child,th:first-child{text-align:left}.best{background:#e7f7e7;font-weight:bold}
.scroll{overflow-x:auto}img{max-width:100%;border:1px solid #eee}.grid{display:flex;flex-wrap:wrap;gap:1em}
.grid figure{margin:0;max-width:32%}figcaption{font-size:12px;color:#555}code{background:#f6f6f6;padding:1px 4px}
#generations th{text-align:left}.verdict{font-size:14px;margin:.3em 0}
td.text{text-align:left;white-space:pre-wrap;vertical-align:top;max-width:28em}.muted{color:#777;font-size:13px}"""

SCRIPT = """document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var dir = th.getAttribute("data-dir") === "asc" ? -1 : 1;
      th.setAttribute("data-dir", dir === 1 ? "asc" : "desc");
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-v"), y = b.cells[col].getAttribute("data-v");
        if (x !== null && y !== null) { return dir * (parseFloat(x) - parseFloat(y)); }
        return dir * a.cells[col].textContent.localeCompare(b.cells[col].textContent);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
document.body.setAttribute("data-ready", "1");"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def csp() -> str:
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    return (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
            "base-uri 'none'; form-action 'none'")


def comparison_html(table: Comparison) -> str:
    head = "".join(f"<th data-kind='{esc(c.kind)}'>{esc(c.title)}</th>" for c in table.columns)
    body = []
    for row, cells in zip(table.rows, formatted_rows(table), strict=True):
        tds = [f"<td>{esc(row.label)}{' (best)' if row.best else ' (tied)' if row.tied else ''}</td>"]
        for column, text in zip(table.columns[1:], cells[1:], strict=True):
            value = mean_of(row.cells.get(column.key)) if column.kind not in ("versus", "interval") else None
            sort_key = f" data-v='{value!r}'" if value is not None else ""
            tds.append(f"<td{sort_key}>{esc(text)}</td>")
        css = " class='best'" if row.best else ""
        body.append(f"<tr{css}>{''.join(tds)}</tr>")
    note = ""
    if table.metric:
        note = (f"<p class='muted'>{'rows ranked' if table.verdict.state == 'indistinguishable' else 'best row'} "
                f"by <code>{esc(table.metric)}</code> "
                f"({'lower' if lower_is_better(table.metric) else 'higher'} is better)"
                f"{'; rows over several seeds show mean ± std' if table.grouped else ''}. "
                "Click a column header to sort.</p>")
    note += "".join(f"<p class='verdict'>{esc(text)}</p>" for text in table.verdict.notes)
    return (f"<div class='scroll'><table id='comparison' class='sortable'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>{note}")


def config_diff_html(records: list[RunRecord], table: Comparison) -> str:
    """The keys whose values differ between runs (rows) per run (columns); the rest folded away."""
    configs = [table_config(r) for r in records]
    varying = varying_keys(configs)
    shared = {k: v for k, v in configs[0].items() if k not in varying} if configs else {}
    details = (f"<details><summary>shared configuration ({len(shared)} keys)</summary>"
               f"<pre>{esc(yaml.safe_dump(shared, sort_keys=True))}</pre></details>")
    if not varying:
        return f"<p>All runs share one configuration.</p>{details}"
    head = "<tr><th>key</th>" + "".join(f"<th>{esc(r.label)}</th>" for r in records) + "</tr>"
    body = "".join(f"<tr><td><code>{esc(k)}</code></td>"
                   + "".join(f"<td>{esc(fmt(c.get(k), 'param'))}</td>" for c in configs) + "</tr>"
                   for k in varying)
    return f"<div class='scroll'><table id='config-diff'>{head}{body}</table></div>{details}"


def sweep_info(records: list[RunRecord]) -> str:
    """The sweep.json of the sweep folder the runs come from (search, metric, study, storage), if any."""
    folders = {r.path.parent for r in records if (r.path.parent / "sweep.json").exists()}
    parts = []
    for folder in sorted(folders):
        info = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
        shown = {k: info.get(k) for k in ("study", "search", "slots", "metric", "direction", "storage")}
        parts.append("<p class='muted'>sweep " + ", ".join(f"{esc(k)}: <code>{esc(v)}</code>"
                                                           for k, v in shown.items()) + "</p>")
    return "".join(parts)


def render_report(records: list[RunRecord], title: str = "tunelab report", metric: str | None = None,
                  alpha: float = 0.05) -> str:
    table = build_comparison(records, metric=metric, alpha=alpha)
    best = next((r for r in table.rows if r.best), None)
    tied = [r.label for r in table.rows if r.tied]
    ordered = ranked_records(records, table.metric)
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    summary_line = (f"{len(records)} run{'s' if len(records) != 1 else ''}; generated {stamp}"
                    + (f"; best: <b>{esc(best.label)}</b>" if best else "")
                    + (f"; top runs indistinguishable: {esc(', '.join(tied))}" if tied else ""))
    sections = [
        ("comparison", "Comparison", comparison_html(table) + sweep_info(records)),
        ("config", "Configuration differences", config_diff_html(records, table)),
        ("curves", "Loss and metric curves", curves_section(records, table.metric, best)),
        ("sweep", "Sweep", sweep_section(records, table.metric)),
        ("cost", "Quality vs cost", cost_section(records, table.metric)),
        ("confusion", "Confusion matrices", confusion_section(ordered)),
        ("misclassified", "Misclassified images", misclassified_section(ordered)),
        ("adapters", "Adapters: scales and B/A norms", adapter_section(ordered)),
        ("generations", "Generations side by side", generations_section(ordered)),
        ("stages", "Base and stages side by side", stage_eval_section(records)),
        ("code", "Code evaluation (pass@1, base vs tuned)", code_section(ordered)),
    ]
    body = "".join(f"<section id='section-{key}'><h2>{esc(heading)}</h2>{content}</section>"
                   for key, heading, content in sections if content)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{csp()}\">"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class='muted'>{summary_line}</p>{body}"
            f"<script>{SCRIPT}</script></body></html>\n")


def write_report(records, path: Path, title: str = "tunelab report", metric: str | None = None,
                 alpha: float = 0.05) -> Path:
    """Write report.html for RunRecords (or the runner's RunOutcomes)."""
    if records and not isinstance(records[0], RunRecord):
        records = records_from_outcomes(records)
    path = Path(path)
    atomic_write_text(path, render_report(list(records), title, metric, alpha))
    return path
