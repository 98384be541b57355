"""Every verb is reachable through the one `tunelab` entry point."""

import pytest

from tests.report.fabricate import classification_metrics, make_run
from tunelab.cli import build_parser, main


def test_all_verbs_registered():
    verbs = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    assert set(verbs) >= {"run", "models", "data", "budget", "eval", "sweep", "compare", "report"}


def test_compare_and_report_through_main(tmp_path, capsys):
    for label, accuracy in (("a", 0.7), ("b", 0.9)):
        make_run(tmp_path / "runs" / label, label, classification_metrics(accuracy))
    assert main(["compare", str(tmp_path / "runs" / "*"), "--format", "markdown"]) == 0
    table = capsys.readouterr().out
    assert "| **b** (best) |" in table and "| a |" in table
    page = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b"), "-o", str(page)]) == 0
    assert page.read_text().count("<table") >= 1


@pytest.mark.parametrize("argv,needle", [
    (["compare", "/nonexistent/run*"], "tunelab: error:"),
    (["eval", "/nonexistent/prompts.jsonl", "--model", "minilm"], "tunelab: error:"),
])
def test_verb_errors_are_one_line_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(needle) and err.strip().count("\n") == 0
