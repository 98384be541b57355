"""The HTML report on hand-written run dirs: sections present, every run-provided string escaped, the
inline script pinned by its hash, figures rendered even when a run dir lacks its PNGs."""

import argparse
import base64
import hashlib
import re

from tunelab.report.html import render_report, write_report
from tunelab.report.runs import find_runs
from tunelab.trials.commands import add_parsers

from .fabricate import adapter_stats, classification_metrics, make_run

EVIL = "<script>alert(1)</script>"


def sft_runs(folder):
    generations = [{"prompt": "Say hi & bye", "generation": f"hi {EVIL}", "reference": "hi <b>bye</b>"},
                   {"prompt": "Count to 3", "generation": "1\n2\n3"}]
    for label, loss in (("sft_r4", 1.9), ("sft_r8", 1.6)):
        make_run(folder, label, {"eval_loss": loss, "perplexity": 2.718 ** loss, "bleu": 12.0},
                 {"adapter.rank": int(label[5:]), "eval.metric": "eval_loss"}, task="sft",
                 files={"generations.jsonl": generations[: 2 if label == "sft_r8" else 1]})


def test_report_sections_and_escaping(tmp_path):
    sft_runs(tmp_path)
    make_run(tmp_path, f"label {EVIL}", {"eval_loss": 2.5}, {"adapter.rank": 2, "eval.metric": "eval_loss"},
             task="sft")
    page = render_report(find_runs([str(tmp_path)]), title=f"t {EVIL}")
    assert EVIL not in page  # not in a label, a title, a generation
    assert "hi &lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;bye&lt;/b&gt;" in page
    assert "Say hi &amp; bye" in page and "1\n2\n3" in page  # newlines kept (pre-wrap), & escaped
    for marker in ("id='comparison'", "id='config-diff'", "id='generations'", "id='section-curves'",
                   "data:image/png;base64"):
        assert marker in page, marker
    assert "<th>sft_r8</th>" in page and "<th>reference</th>" in page
    assert re.search(r"<tr class='best'><td>sft_r8 \(best\)</td>", page)  # eval_loss: lower is better
    assert page.count("<script>") == 1  # only ours


def test_inline_script_is_pinned_by_csp_hash(tmp_path):
    """The CSP pins the script text the page really carries (what a browser hashes), not a constant."""
    sft_runs(tmp_path)
    page = render_report(find_runs([str(tmp_path)]), title="t")
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    policy = re.search(r"script-src ([^;]+);", page).group(1).split()
    assert len(scripts) == 1 and len(policy) == 1  # one inline script, allowed by one hash and nothing else
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode("utf-8")).digest()).decode("ascii")
    assert policy[0] == f"'sha256-{digest}'"
    assert "data-ready" in scripts[0]  # ours: the sortable-table script that marks the page ready


def test_classification_figures_drawn_from_json_when_pngs_are_missing(tmp_path):
    make_run(tmp_path, "a", classification_metrics(0.7), {"adapter.variant": "lora"},
             files={"adapter_stats.json": adapter_stats(scaled=False)})
    make_run(tmp_path, "b", classification_metrics(0.8), {"adapter.variant": "dora_scaled"},
             files={"adapter_stats.json": adapter_stats(scaled=True)})
    page = render_report(find_runs([str(tmp_path)]))
    assert "id='section-confusion'" in page and page.count("alt='confusion matrix") == 2
    assert "id='adapter-norms'" in page and page.count("alt='adapter heat map") == 2
    assert "1.900 .. 2.200" in page  # per-head scale range of the scaled run
    assert "adapter.variant" in page and "id='generations'" not in page


def test_report_cli_writes_into_the_folder(tmp_path, capsys):
    sft_runs(tmp_path)
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["report", str(tmp_path)])
    assert args.handler(args) == 0
    assert (tmp_path / "report.html").exists() and "report (2 runs)" in capsys.readouterr().out
    out = write_report(find_runs([str(tmp_path / "sft_r4")]), tmp_path / "one.html")
    assert "id='comparison'" in out.read_text()
