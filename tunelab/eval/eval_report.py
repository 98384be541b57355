"""Files of `tunelab eval`: per-prompt and summary tables as markdown, CSV and one HTML page.

Model text is untrusted: in HTML every cell goes through `html.escape`; in markdown `&`, `<`, `>`
become entities (a generated `<script>` stays text in any viewer), `[` `]` are escaped (no link or image
syntax, so no `javascript:` link), `|` is escaped and newlines become
`<br>` so a multi-line answer stays in its cell. CSV keeps raw text and full-precision numbers (the csv
module quotes as needed).
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path
from typing import Any

from tunelab.rundir import atomic_write_text

SUMMARY_COLUMNS = [("label", "model"), ("mean_ppl", "mean PPL"), ("corpus_ppl", "corpus PPL"),
                   ("bleu", "BLEU"), ("chrf", "chrF"), ("refusal_rate", "refusal rate"),
                   ("over_refusal_rate", "over-refusal rate"), ("tokens_per_s", "gen tokens/s")]
PER_MODEL_COLUMNS = [("generation", "generation"), ("ppl", "PPL"), ("bleu", "BLEU"), ("chrf", "chrF"),
                     ("refused", "refused")]
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#f3f3f3}td.text{white-space:pre-wrap;max-width:40em}td.num{text-align:right}"""
# no script at all, no external fetch: even text that slipped through unescaped could not run or load anything
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def fmt(value: Any) -> str:
    """Numbers with 2 decimals (4 for rates), booleans as yes/no, missing as empty."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) <= 1 else f"{value:,.2f}"
    return "" if value is None else str(value)


def per_prompt_columns(labels: list[str]) -> list[tuple[str, str]]:
    """(key, title) pairs: the prompt's own fields, then five columns per model."""
    base = [("id", "id"), ("prompt", "prompt"), ("reference", "reference"), ("should_refuse", "should refuse")]
    return base + [(f"{label}:{key}", f"{label} {title}") for label in labels for key, title in PER_MODEL_COLUMNS]


def markdown_cell(value: Any) -> str:
    """Entities for & < >, and `[` `]` backslash-escaped so no text forms a link or image ([x](javascript:..))."""
    text = html.escape(fmt(value), quote=False).replace("|", "\\|").replace("[", "\\[").replace("]", "\\]")
    return "<br>".join(text.splitlines())


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(markdown_cell(title) for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(markdown_cell(row.get(key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([title for _, title in columns])
    writer.writerows([["" if row.get(key) is None else row[key] for key, _ in columns] for row in rows])
    return buffer.getvalue()


def html_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], table_id: str) -> str:
    out = [f"<table id='{table_id}'><tr>" + "".join(f"<th>{html.escape(t)}</th>" for _, t in columns) + "</tr>"]
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            css = "num" if isinstance(value, int | float) and not isinstance(value, bool) else "text"
            cells.append(f"<td class='{css}'>{html.escape(fmt(value))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out + ["</table>"])


def html_page(summary_rows: list[dict[str, Any]], prompt_rows: list[dict[str, Any]], labels: list[str],
              meta: dict[str, Any]) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in meta.get("settings", {}).items())
    return "\n".join([
        "<!doctype html><html><head><meta charset='utf-8'><title>tunelab eval</title>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>tunelab eval: {html.escape(str(meta.get('prompt_file', '')))}</h1>",
        f"<p>{html.escape(str(meta.get('num_prompts', len(prompt_rows))))} prompts; {html.escape(settings)}</p>",
        "<h2>Summary</h2>", html_table(summary_rows, SUMMARY_COLUMNS, "summary"),
        "<h2>Per prompt</h2>", html_table(prompt_rows, per_prompt_columns(labels), "per_prompt"),
        "</body></html>\n"])


def write_tables(out_dir: Path, summary_rows: list[dict[str, Any]], prompt_rows: list[dict[str, Any]],
                 labels: list[str], meta: dict[str, Any]) -> list[str]:
    """Write every table file atomically; returns the file names written."""
    columns = per_prompt_columns(labels)
    files = {
        "summary.md": markdown_table(summary_rows, SUMMARY_COLUMNS),
        "summary.csv": csv_text(summary_rows, SUMMARY_COLUMNS),
        "per_prompt.md": markdown_table(prompt_rows, columns),
        "per_prompt.csv": csv_text(prompt_rows, columns),
        "per_prompt.html": html_page(summary_rows, prompt_rows, labels, meta),
    }
    for name, text in files.items():
        atomic_write_text(out_dir / name, text)
    return list(files)
