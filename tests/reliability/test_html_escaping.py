"""Model output and run metadata are untrusted text: hostile strings placed in every file the HTML report and
the `tunelab eval` tables read never come out as markup — no script, no event handler, no javascript: link —
in the report, the eval HTML page, or the eval markdown tables rendered by a permissive markdown viewer."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tunelab.eval.eval_report import write_tables
from tunelab.report.html import render_report
from tunelab.report.runs import find_runs

from ..report.fabricate import classification_metrics, make_run

PAYLOADS = {
    "script": "<script>alert(1)</script>",
    "img onerror": "<img src=x onerror=alert(1)>",
    "javascript: anchor": '<a href="javascript:alert(1)">click</a>',
    "javascript: anchor, single quotes": "<a href='javascript:alert(1)'>click</a>",
    "javascript: markdown link": "[click](javascript:alert(1))",
    "javascript: markdown image": "![x](javascript:alert(1))",
    "javascript: autolink": "<javascript:alert(1)>",
}

class Elements(HTMLParser):
    """The elements a browser would build from a page: (tag, attributes) of every start tag."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))


def assert_inert(page: str, where: str, own_scripts: int = 0) -> None:
    """No element a payload could have made: no event-handler attribute, no javascript: URL, no link, no
    script beyond the page's own, no image that is not an embedded PNG."""
    tags = Elements(page).tags
    assert sum(tag == "script" for tag, _ in tags) == own_scripts, where
    for tag, attrs in tags:
        assert tag != "a", f"{where}: a link {attrs}"
        for name, value in attrs:
            assert not name.startswith("on"), f"{where}: <{tag} {name}=...>"
            assert not (value or "").strip().lower().startswith("javascript:"), f"{where}: <{tag} {name}={value}>"
            if tag == "img" and name == "src":
                assert (value or "").startswith("data:image/png;base64,"), f"{where}: <img src={value}>"
    assert not re.search(r"<script>alert|<img src=x", page, re.I), where  # nor as raw text anywhere


def csv_of(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def run_files(evil: str) -> dict[str, dict]:
    """Per task, the files a finished run writes with the payload in every free-text field."""
    generations = [{"prompt": f"p {evil}", "generation": f"g {evil}", "reference": f"r {evil}"},
                   {"prompt": "plain", "generation": evil}]
    code_summary = {"num_problems": evil, "pass_at_k": {"pass@1": 0.5}, "kinds": {evil: 1, "passed": 1}}
    return {
        "sft": {"generations.jsonl": generations,
                "code_eval/base/summary.json": code_summary,
                "code_eval/base/results.jsonl": [{"task_id": evil, "passed": False, "samples": [{"kind": evil}]}],
                "code_eval/tuned/summary.json": code_summary,
                "code_eval/tuned/results.jsonl": [{"task_id": evil, "passed": True, "samples": [{"kind": "ok"}]}]},
        "classification": {"predictions.csv": csv_of([["text", "label", "prediction"], [evil, "a", "a"],
                                                      [f"x {evil}", "b", "a"]])},
        "qa": {"predictions.jsonl": [{"id": evil, "prediction": evil, "answers": [evil]}]},
    }


def fabricated_runs(folder: Path, evil: str) -> None:
    files = run_files(evil)
    for task, metrics in (("sft", {"eval_loss": 1.5, "bleu": 10.0}), ("classification", classification_metrics(0.7)),
                          ("qa", {"exact": 50.0, "f1": 60.0})):
        for seed in (0, 1):  # two runs per task: config diffs, comparisons and significance notes
            run_dir = make_run(folder / task, f"{task}_{seed}", metrics,
                               {"train.seed": seed, "description": f"d {evil}", "data.system": evil}, task=task,
                               files={name: content for name, content in files[task].items() if "/" not in name})
            for name, content in files[task].items():
                if "/" in name:
                    (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
                    (run_dir / name).write_text("".join(json.dumps(r) + "\n" for r in content)
                                                if name.endswith(".jsonl") else json.dumps(content))
            summary = json.loads((run_dir / "summary.json").read_text())
            (run_dir / "summary.json").write_text(json.dumps({**summary, "label": f"{task} {seed} {evil}"}))
    stage_eval = folder / "sft" / "stage_eval"
    stage_eval.mkdir()
    (stage_eval / "eval_summary.json").write_text(json.dumps(
        {"prompt_file": evil, "num_prompts": evil, "models": [{"label": evil, "metrics": {"mean_ppl": 3.0}}]}))
    (stage_eval / "per_prompt.csv").write_text(csv_of([["id", "prompt", f"{evil}:ppl"], [evil, evil, "3.0"]]))


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_the_html_report_never_renders_a_payload_as_markup(tmp_path, payload):
    evil = PAYLOADS[payload]
    fabricated_runs(tmp_path, evil)
    records = find_runs([str(tmp_path / task) for task in ("sft", "classification", "qa")])
    assert len(records) == 6
    page = render_report(records, title=f"t {evil}")
    assert_inert(page, "report", own_scripts=1)  # the report's own script, pinned by its hash
    escaped = evil.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert escaped.split('"')[0].split("'")[0] in page  # the text is there, shown as text
    for section in ("id='generations'", "id='code-eval'", "id='stage-summary'", "id='config-diff'"):
        assert section in page, section


def eval_rows(evil: str) -> tuple[list[dict], list[dict], list[str], dict]:
    label = f"m {evil}"
    summary = [{"label": label, "mean_ppl": 3.2, "bleu": 10.0}]
    prompts = [{"id": evil, "prompt": f"p {evil}", "reference": f"r {evil}", "should_refuse": False,
                f"{label}:generation": f"line 1\n{evil}\n| a | b |", f"{label}:ppl": 2.0}]
    return summary, prompts, [label], {"prompt_file": evil, "num_prompts": evil, "settings": {"temp": evil}}


def permissive_markdown() -> MarkdownIt:
    """A markdown viewer that passes inline HTML through and filters no link: the worst case."""
    renderer = MarkdownIt("commonmark", {"html": True}).enable("table")
    renderer.validateLink = lambda url: True
    return renderer


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_the_eval_tables_never_render_a_payload_as_markup(tmp_path, payload):
    evil = PAYLOADS[payload]
    write_tables(tmp_path, *eval_rows(evil))
    assert_inert((tmp_path / "per_prompt.html").read_text(), "per_prompt.html")
    for name in ("summary.md", "per_prompt.md"):
        text = (tmp_path / name).read_text()
        rendered = permissive_markdown().render(text)
        assert_inert(rendered, f"{name} rendered")
        assert "<table>" in rendered, name  # the payload's `|` did not break the table
    cells = [cell for row in csv.reader(io.StringIO((tmp_path / "per_prompt.csv").read_text())) for cell in row]
    assert evil in cells  # CSV keeps the raw text: data, not markup
