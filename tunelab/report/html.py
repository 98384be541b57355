"""A self-contained HTML report: comparison table, config differences, loss curves, confusion
matrices and adapter heat maps (PNGs embedded as data URIs, so the page is one file).

Everything that comes from data or models is passed through html.escape.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import yaml

from tunelab.report.compare import comparison_rows, markdown_table
from tunelab.report.plots import plot_curves
from tunelab.rundir import atomic_write_text, read_jsonl

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.best{background:#e7f7e7;font-weight:bold}
img{max-width:100%;border:1px solid #eee}.grid{display:flex;flex-wrap:wrap;gap:1em}.grid figure{margin:0}
code{background:#f6f6f6;padding:1px 4px}"""


def embed_png(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(Path(path).name)}" src="data:image/png;base64,{data}">'


def table_html(rows: list[dict[str, Any]]) -> str:
    lines = markdown_table(rows).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    out = ["<table id='comparison'><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        css = " class='best'" if "(best)" in cells[0] else ""
        out.append(f"<tr{css}>" + "".join(f"<td>{html.escape(c.replace('**', ''))}</td>" for c in cells) + "</tr>")
    return "\n".join(out + ["</table>"])


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_diff(run_dirs: list[Path], labels: list[str]) -> str:
    """Only the keys whose values differ between runs."""
    configs = [flatten(yaml.safe_load((d / "config.yaml").read_text())) for d in run_dirs]
    keys = sorted({k for c in configs for k in c if k not in ("variants",) and not k.startswith("variants.")})
    varying = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
    if not varying:
        return "<p>All runs share one configuration.</p>"
    head = "<tr><th>key</th>" + "".join(f"<th>{html.escape(lbl)}</th>" for lbl in labels) + "</tr>"
    body = "".join("<tr><td><code>" + html.escape(k) + "</code></td>" + "".join(
        f"<td>{html.escape(str(c.get(k)))}</td>" for c in configs) + "</tr>" for k in varying)
    return f"<table id='config-diff'>{head}{body}</table>"


def write_report(outcomes, path: Path) -> None:
    path = Path(path)
    labels = [o.label for o in outcomes]
    rows = comparison_rows([o.summary for o in outcomes])
    losses = {o.label: [(r["step"], r["loss"]) for r in read_jsonl(o.run_dir / "metrics.jsonl") if "loss" in r]
              for o in outcomes}
    plot_curves(losses, path.parent / "loss_curves.png", "training loss", "training loss")
    parts = [f"<html><head><meta charset='utf-8'><title>tunelab report</title><style>{STYLE}</style></head><body>",
             "<h1>tunelab report</h1>", "<h2>Comparison</h2>", table_html(rows),
             "<h2>Configuration differences</h2>", config_diff([o.run_dir for o in outcomes], labels),
             "<h2>Training loss</h2>", embed_png(path.parent / "loss_curves.png"),
             "<h2>Confusion matrices</h2><div class='grid'>"]
    for outcome in outcomes:
        png = outcome.run_dir / "confusion_matrix.png"
        if png.exists():
            parts.append(f"<figure>{embed_png(png)}<figcaption>{html.escape(outcome.label)}</figcaption></figure>")
    parts.append("</div><h2>Adapter heat maps</h2><div class='grid'>")
    for outcome in outcomes:
        png = outcome.run_dir / "adapter_heatmap.png"
        if png.exists():
            parts.append(f"<figure>{embed_png(png)}<figcaption>{html.escape(outcome.label)}</figcaption></figure>")
    parts.append("</div></body></html>")
    atomic_write_text(path, "\n".join(parts))
