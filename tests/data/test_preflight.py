"""Pre-flight reports: the highlighted tokens are exactly the ones with a loss, and the warnings fire on
the problems they name (imbalance, train/eval overlap, truncation) and stay quiet otherwise."""

from __future__ import annotations

import re

import numpy as np

from tests.tasks.tiny_chat import chat_tokenizer, write_toy_sft
from tunelab.cli import main
from tunelab.data.preflight import balance_lines, highlighted, length_lines, overlap_warning
from tunelab.recipes import validate
from tunelab.tasks.sft import SFTTask

GREEN = re.compile(r"\[bold green\](.*?)\[/\]")


def test_sft_preflight_highlights_the_answer_and_its_end_of_turn(tmp_path):
    data = write_toy_sft(tmp_path / "toy.jsonl", repeats=2)
    task = SFTTask(validate({"task": "sft", "model": {"name": "x", "max_length": 64}, "data": {"train": str(data)}}))
    tokenizer = chat_tokenizer()
    task.prepare_data(tokenizer, "tiny", None)
    report = task.preflight()
    heading, (line,) = report.sections[0]
    trained = "".join(GREEN.findall(line))
    first = task.train_ids[0].tolist()
    expected = [first[j] for j in range(1, len(first)) if task.train_targets[0][j - 1] != -100]
    assert trained.strip() == tokenizer.decode(expected).strip() and trained.strip().endswith("</s>")
    assert "user" not in trained  # the prompt carries no loss
    labels = dict(report.sections)["labels"]
    assert labels[0].startswith("100% of the training examples train the end-of-turn token")
    assert report.warnings == [] or all("also occur" in w for w in report.warnings)


def test_highlighting_follows_the_mask_token_by_token():
    tokenizer = chat_tokenizer()
    ids = tokenizer("what colour is the sky blue", add_special_tokens=False)["input_ids"]
    line = highlighted(tokenizer, ids, [False] * 5 + [True])
    assert GREEN.findall(line) == [" blue"]


def test_balance_overlap_and_length_warnings():
    lines, warnings = balance_lines([0] * 9 + [1], [0, 1], ["neg", "pos"])
    assert lines[0].startswith("neg: train 9 (90%)") and any("90% of the training rows" in w for w in warnings)
    assert balance_lines([0, 1] * 5, [0, 1], ["neg", "pos"])[1] == []
    assert balance_lines([0, 1] * 5, [0, 0], ["neg", "pos"])[1] == ["class 'pos' has no eval rows"]
    assert "2 of 3 eval rows" in overlap_warning(["a", "b", "c"], ["a", "c", "z"])
    assert overlap_warning(["a"], ["b"]) is None
    lines, truncated = length_lines(np.array([10, 20, 64, 64]), 64)
    assert truncated == 0.5 and "50.0% at the cap (model.max_length = 64)" in lines[1]


def test_check_verb_prints_the_report_without_training(tmp_path, capsys):
    rows = "".join(f"text {i % 5},{'pos' if i % 10 else 'neg'}\n" for i in range(40))
    (tmp_path / "t.csv").write_text("text,label\n" + rows)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{name: minilm, max_length: 16}}\ndata: {{train: {tmp_path / 't.csv'}}}\n"
                      f"output_dir: {tmp_path / 'runs'}\n")
    assert main(["check", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "pre-flight: classification" in out and "also occur in the training data" in out
    assert "90% of the training rows" in out or "bad rows skipped" in out
    assert not (tmp_path / "runs").exists()


def test_lm_preflight_shows_the_first_window_and_warns_on_val_only_symbols(tmp_path):
    from tunelab.recipes import load_recipe
    from tunelab.tasks.lm import LMTask

    text = tmp_path / "t.txt"
    text.write_text("abcabcabc " * 30 + "xyz" * 10)  # the last 10% (val) holds symbols training never sees
    config = load_recipe("configs/shakespeare_char_nanogpt.yaml", [
        "data.dataset=null", f"data.train={text}", "model.arch={type: gpt, n_layer: 1, n_head: 2, n_embd: 16, "
        "block_size: 8}", "data.split_seed=0"])
    task = LMTask(config)
    task.prepare_data(None, "", None)
    report = task.preflight()
    heading, (window,) = report.sections[0]
    assert window == task.tokenizer.decode(task.train_ids[:8].tolist()) and "8 tokens" in heading
    assert any("occur only in the val text" in w for w in report.warnings)


def test_qa_preflight_highlights_the_labelled_answer_span(tmp_path):
    import json

    from tunelab.assets.models import load_tokenizer, resolve_model
    from tunelab.tasks.qa import QATask

    rows = [{"question": "what colour is the sky", "context": "The sky is blue today.",
             "answers": {"text": ["blue"], "answer_start": [11]}},
            {"question": "who won", "context": "Nobody knows.", "answers": {"text": [], "answer_start": []}}]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows * 3))
    task = QATask(validate({"task": "qa", "model": {"name": "minilm", "max_length": 64}, "qa": {"doc_stride": 16},
                            "data": {"train": str(path), "eval": str(path)}}))
    task.prepare_data(load_tokenizer(resolve_model("minilm")), "minilm", None)
    report = task.preflight()
    heading, (line,) = report.sections[0]
    assert "".join(GREEN.findall(line)).strip() == "blue" and "gold 'blue'" in heading
    assert "50% of the questions have no answer" in dict(report.sections)["windows"][0]
