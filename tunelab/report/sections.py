"""The figure and text sections of the HTML report. Each returns an HTML fragment, or "" when the runs
have nothing for it (a full fine-tune has no adapters; a classifier writes no generations.jsonl).

Sections with one figure per run show at most MAX_FIGURES runs, best first, and say so.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path
from typing import Any

from tunelab.report.compare import lower_is_better
from tunelab.report.plots import confusion_figure, curve_panels_png, figure_png, sweep_png
from tunelab.report.runs import RunRecord, is_number
from tunelab.rundir import read_jsonl

MAX_FIGURES = 12
MAX_CURVE_RUNS = 20
MAX_EVAL_PANELS = 5
MAX_GENERATION_RUNS = 6
MAX_PROMPTS = 50


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def embed(data: bytes | Path, alt: str) -> str:
    """An <img> with the PNG inline as a data URI (the page stays one file)."""
    raw = Path(data).read_bytes() if isinstance(data, Path) else data
    return f"<img alt='{esc(alt)}' src='data:image/png;base64,{base64.b64encode(raw).decode('ascii')}'>"


def ranked_records(records: list[RunRecord], metric: str | None) -> list[RunRecord]:
    """Best first by the table's metric, so capped figure sections show the runs that matter."""
    if not metric:
        return list(records)
    sign = 1 if lower_is_better(metric) else -1
    return sorted(records, key=lambda r: (metric not in r.metrics, sign * r.metrics.get(metric, 0.0)))


def capped_note(shown: int, total: int) -> str:
    return f"<p class='muted'>{shown} of {total} runs shown (best first).</p>" if total > shown else ""


def figure(image: str, caption: str) -> str:
    return f"<figure>{image}<figcaption>{esc(caption)}</figcaption></figure>"


def curves_section(records: list[RunRecord], metric: str | None, best_row) -> str:
    """Training loss and each periodic-eval metric against the optimizer step, one line per run."""
    shown = ranked_records(records, metric)[:MAX_CURVE_RUNS]
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
    loss = {r.label: [(h["step"], h["loss"]) for h in r.history if is_number(h.get("loss"))] for r in shown}
    if any(loss.values()):
        panels["training loss"] = loss
    eval_keys = list(dict.fromkeys(k for r in shown for h in r.history if isinstance(h.get("eval"), dict)
                                   for k, v in h["eval"].items() if is_number(v)))
    if metric in eval_keys:
        eval_keys.remove(metric)
        eval_keys.insert(0, metric)
    for key in eval_keys[:MAX_EVAL_PANELS]:
        panels[f"eval {key}"] = {r.label: [(h["step"], h["eval"][key]) for h in r.history
                                           if isinstance(h.get("eval"), dict) and is_number(h["eval"].get(key))]
                                 for r in shown}
    if not panels:
        return ""
    highlight = best_row.records[0].label if best_row is not None and len(best_row.records) == 1 else None
    note = "" if eval_keys else "<p class='muted'>No periodic evaluations (set train.eval_every for eval curves).</p>"
    return embed(curve_panels_png(panels, highlight), "loss and metric curves") + note + \
        capped_note(len(shown), len(records))


def sweep_section(records: list[RunRecord], metric: str | None) -> str:
    """For sweep trials (trial.json): the metric per trial with the best so far, and against each parameter."""
    trials = [r for r in records if r.trial and metric in r.metrics]
    if len(trials) < 2 or not metric:
        return ""
    points = [(int(r.trial.get("number", i)), r.metrics[metric], r.trial.get("state") == "PRUNED")
              for i, r in enumerate(trials)]
    names = list(dict.fromkeys(k for r in trials for k in r.trial.get("params", {})))
    params = {}
    for name in names:
        values = [(r.trial["params"].get(name), r.metrics[metric]) for r in trials if name in r.trial.get("params", {})]
        if len({json.dumps(v, default=str) for v, _ in values}) > 1:
            params[name] = [(v if is_number(v) else json.dumps(v) if isinstance(v, list | dict) else v, m)
                            for v, m in values]
    png = sweep_png(points, params, metric, lower_is_better(metric))
    pruned = any(p for *_, p in points)
    note = "<p class='muted'>Hollow points: pruned trials (scored on their weights when pruning stopped them).</p>"
    return embed(png, "sweep") + (note if pruned else "")


def confusion_section(records: list[RunRecord]) -> str:
    figures = []
    candidates = [r for r in records if (r.path / "confusion_matrix.png").exists()
                  or isinstance(r.summary.get("metrics", {}).get("confusion_matrix"), list)]
    for record in candidates[:MAX_FIGURES]:
        png = record.path / "confusion_matrix.png"
        if png.exists():
            image = embed(png, f"confusion matrix {record.label}")
        else:
            matrix = record.summary["metrics"]["confusion_matrix"]
            image = embed(figure_png(confusion_figure(matrix, [str(i) for i in range(len(matrix))], record.label)),
                          f"confusion matrix {record.label}")
        figures.append(figure(image, record.label))
    if not figures:
        return ""
    return f"<div class='grid'>{''.join(figures)}</div>" + capped_note(len(figures), len(candidates))


def misclassified_section(records: list[RunRecord]) -> str:
    """Image classifiers' grids of their most confident mistakes (misclassified.png in the run folder)."""
    candidates = [r for r in records if (r.path / "misclassified.png").exists()]
    figures = [figure(embed(r.path / "misclassified.png", f"misclassified {r.label}"), r.label)
               for r in candidates[:MAX_FIGURES]]
    return "".join(figures) + capped_note(len(figures), len(candidates)) if figures else ""


def adapter_stats(record: RunRecord) -> list[dict[str, Any]] | None:
    path = record.path / "adapter_stats.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def heatmap_image(record: RunRecord, stats: list[dict[str, Any]] | None) -> str | None:
    png = record.path / "adapter_heatmap.png"
    if png.exists():
        return embed(png, f"adapter heat map {record.label}")
    if not stats:
        return None
    from tunelab.report.heatmap import plot_scale_heatmap

    with tempfile.TemporaryDirectory() as tmp:
        out = plot_scale_heatmap(stats, Path(tmp) / "heatmap.png")
        return embed(Path(out).read_bytes(), f"adapter heat map {record.label}")


def norms_row(record: RunRecord, stats: list[dict[str, Any]]) -> str:
    """One line of the B/A norm table: how far each adapter moved (‖B‖ starts at 0 under zero init)."""
    def mean(key: str) -> float:
        values = [s[key] for s in stats if is_number(s.get(key))]
        return sum(values) / len(values) if values else float("nan")

    scales = [v for s in stats for key in ("scale", "scale_out", "scale_in") for v in s.get(key) or []]
    scale_range = f"{min(scales):.3f} .. {max(scales):.3f}" if scales else ""
    variants = ",".join(sorted({str(s.get("variant")) for s in stats}))
    cells = [record.label, variants, len(stats), f"{mean('rank'):.1f}", f"{mean('A_norm'):.4f}",
             f"{mean('B_norm'):.4f}", f"{max((s.get('B_norm') or 0.0) for s in stats):.4f}", scale_range]
    return "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"


def adapter_section(records: list[RunRecord]) -> str:
    """Each run's heat map (per-head scales, ‖B‖ by layer) and a table of mean ‖A‖/‖B‖ per run."""
    rows, figures, total = [], [], 0
    for record in records:
        stats = adapter_stats(record)
        if stats:
            rows.append(norms_row(record, stats))
        if stats or (record.path / "adapter_heatmap.png").exists():
            total += 1
            if len(figures) < MAX_FIGURES and (image := heatmap_image(record, stats)):
                figures.append(figure(image, record.label))
    if not rows and not figures:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("run", "variant", "modules", "mean rank", "mean ‖A‖", "mean ‖B‖",
                                            "max ‖B‖", "scales min .. max"))
    table = f"<table id='adapter-norms'><tr>{head}</tr>{''.join(rows)}</table>" if rows else ""
    return table + f"<div class='grid'>{''.join(figures)}</div>" + capped_note(len(figures), total)


def generations_section(records: list[RunRecord]) -> str:
    """Rows of generations.jsonl ({prompt, generation, reference?}) aligned by prompt, one column per run.
    Model output is untrusted text: escaped, shown as preformatted text, never as markup."""
    runs = [(r, read_jsonl(r.path / "generations.jsonl")) for r in records if (r.path / "generations.jsonl").exists()]
    runs = [(r, rows) for r, rows in runs if rows][:MAX_GENERATION_RUNS]
    if not runs:
        return ""
    prompts: list[str] = []
    references: dict[str, str] = {}
    outputs: list[dict[str, str]] = []
    for _, rows in runs:
        by_prompt: dict[str, str] = {}
        for row in rows:
            prompt = str(row.get("prompt", ""))
            if prompt not in by_prompt:
                by_prompt[prompt] = str(row.get("generation", ""))
            if prompt not in prompts:
                prompts.append(prompt)
            if row.get("reference") is not None:
                references.setdefault(prompt, str(row["reference"]))
        outputs.append(by_prompt)
    has_reference = bool(references)
    head = "<th>prompt</th>" + ("<th>reference</th>" if has_reference else "") + \
        "".join(f"<th>{esc(r.label)}</th>" for r, _ in runs)
    body = []
    for prompt in prompts[:MAX_PROMPTS]:
        cells = [prompt] + ([references.get(prompt, "")] if has_reference else []) + \
            [out.get(prompt, "") for out in outputs]
        body.append("<tr>" + "".join(f"<td class='text'>{esc(c)}</td>" for c in cells) + "</tr>")
    more = f"<p class='muted'>{MAX_PROMPTS} of {len(prompts)} prompts shown.</p>" if len(prompts) > MAX_PROMPTS else ""
    return f"<div class='scroll'><table id='generations'><tr>{head}</tr>{''.join(body)}</table></div>{more}"


def stage_eval_section(records: list[RunRecord]) -> str:
    """The base-vs-stages table of a stage chain (`stage_eval/` beside the stage folders, written by
    `tunelab eval`): the summary, then per-prompt perplexity of the reference answer for every model."""
    import csv

    from tunelab.eval.eval_report import SUMMARY_COLUMNS, html_table

    parts = []
    for folder in sorted({r.path.parent / "stage_eval" for r in records}):
        summary_path, per_prompt = folder / "eval_summary.json", folder / "per_prompt.csv"
        if not summary_path.is_file() or not per_prompt.is_file():
            continue
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        labels = [m["label"] for m in summary["models"]]
        rows = [{"label": m["label"], **m["metrics"]} for m in summary["models"]]
        with per_prompt.open(encoding="utf-8", newline="") as handle:
            prompt_rows = [{k: (float(v) if k.endswith(":ppl") and v else v) for k, v in row.items()}
                           for row in csv.DictReader(handle)]
        columns = [("id", "id"), ("prompt", "prompt")] + [(f"{label}:ppl", f"{label} PPL") for label in labels]
        parts.append(f"<h3>{esc(folder.parent.name)}: {esc(summary.get('prompt_file', ''))} "
                     f"({esc(summary.get('num_prompts', len(prompt_rows)))} prompts)</h3>"
                     + html_table(rows, SUMMARY_COLUMNS, "stage-summary")
                     + html_table(prompt_rows[:MAX_PROMPTS], columns, "stage-per-prompt"))
    return "".join(parts)
