"""The report's "Code evaluation" section: pass@1 of the base and the tuned model per run (from the
code_eval/{base,tuned}/ folders an SFT run with `eval.code` writes), the failure kinds, and the problems
whose verdict fine-tuning changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.report.runs import RunRecord
from tunelab.report.sections import esc
from tunelab.rundir import read_jsonl

MAX_CHANGED = 20


def _read(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    summary, results = folder / "summary.json", folder / "results.jsonl"
    if not summary.is_file() or not results.is_file():
        return None
    return json.loads(summary.read_text(encoding="utf-8")), read_jsonl(results)


def _kinds(summary: dict[str, Any]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in summary["kinds"].items() if count)


def code_section(records: list[RunRecord]) -> str:
    head = "<tr><th>run</th><th>model</th><th>problems</th><th>pass@1</th><th>samples by kind</th></tr>"
    rows, changed = [], []
    for record in records:
        scored = {label: _read(record.path / "code_eval" / label) for label in ("base", "tuned")}
        scored = {label: found for label, found in scored.items() if found}
        for label, (summary, _) in scored.items():
            rows.append(f"<tr><td>{esc(record.label)}</td><td>{label}</td><td>{esc(summary['num_problems'])}</td>"
                        f"<td>{summary['pass_at_k']['pass@1']:.3f}</td><td>{esc(_kinds(summary))}</td></tr>")
        if len(scored) == 2:
            base = {row["task_id"]: row for row in scored["base"][1]}
            for row in scored["tuned"][1]:
                before = base.get(row["task_id"])
                if before and before["passed"] != row["passed"]:
                    changed.append((record.label, row["task_id"], before["samples"][0]["kind"],
                                    row["samples"][0]["kind"]))
    if not rows:
        return ""
    table = f"<table id='code-eval'>{head}{''.join(rows)}</table>"
    if not changed:
        return table + "<p class='muted'>No problem changed verdict between base and tuned.</p>"
    lines = "".join(f"<tr><td>{esc(run)}</td><td>{esc(task)}</td><td>{esc(a)}</td><td>{esc(b)}</td></tr>"
                    for run, task, a, b in changed[:MAX_CHANGED])
    more = f"<p class='muted'>{MAX_CHANGED} of {len(changed)} shown.</p>" if len(changed) > MAX_CHANGED else ""
    return (table + "<h3>Problems whose verdict changed</h3><table id='code-changed'><tr><th>run</th>"
            f"<th>problem</th><th>base</th><th>tuned</th></tr>{lines}</table>{more}")
