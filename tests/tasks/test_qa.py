"""Extractive QA: windows map back to the exact context text, bad rows are counted, a short run beats the
untrained head, and `tunelab predict` on the reloaded artifact gives the training run's predictions."""

import gzip
import json

import numpy as np
import pytest
import yaml

from tunelab.assets.models import load_tokenizer, resolve_model
from tunelab.data.pairs import BadRows
from tunelab.data.qa_rows import frame_rows, read_qa_file
from tunelab.data.qa_windows import encode_windows
from tunelab.eval.qa_postprocess import best_answers
from tunelab.recipes import load_recipe
from tunelab.runner import load_task, prepare_model, run_recipe

VENDORED = "tunelab/data/vendored/squad2_train.jsonl.gz"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model("minilm"))


def long_context():
    filler = " ".join(f"Sentence {i} talks about the weather in town number {i}." for i in range(40))
    answer = "the Treaty of Paris in 1763"
    context = f"{filler} The war ended with {answer}, after long talks. {filler}"
    return context, answer, context.index(answer)


def test_offsets_map_back_to_the_exact_substring_across_windows(tokenizer):
    context, answer, start = long_context()
    windows = encode_windows(tokenizer, ["How did the war end?"], [context], [[(answer, start)]], 128, 32)
    assert len(windows) > 3 and set(windows.example) == {0}
    labelled = np.flatnonzero(windows.start > 0)
    assert len(labelled) >= 1
    for w in labelled:  # every window holding the whole answer labels exactly its tokens
        s, e = windows.start[w], windows.end[w]
        assert context[windows.offsets[w][s, 0]:windows.offsets[w][e, 1]] == answer
    for w in range(len(windows)):  # each context token's span is the text that token was cut from
        for token, (a, b) in zip(windows.ids[w], windows.offsets[w], strict=True):
            if a >= 0:
                piece = tokenizer.decode([int(token)]).replace("##", "")
                assert context[a:b].lower() == piece
    # logits peaking at the answer in the last window that holds it decode to the exact span
    w = labelled[-1]
    starts = [np.zeros(len(ids)) for ids in windows.ids]
    ends = [np.zeros(len(ids)) for ids in windows.ids]
    starts[w][windows.start[w]], ends[w][windows.end[w]] = 5.0, 5.0
    best = best_answers(windows, starts, ends, [context], n_best=5, max_answer_length=30)[0]
    assert (best.text, best.start, best.end) == (answer, start, start + len(answer))
    assert best.no_answer_score == pytest.approx(0.0 - 10.0)


def test_bad_rows_are_counted_with_row_numbers(tmp_path):
    rows = [{"question": "Who?", "context": "Ada wrote it.", "answers": {"text": ["Ada"], "answer_start": [0]}},
            {"question": "  ", "context": "Ada wrote it.", "answers": {"text": [], "answer_start": []}},
            {"question": "What?", "context": "Ada wrote it.", "answers": [{"text": "Bob", "answer_start": 0}]},
            {"question": "When?", "context": "Ada wrote it.", "answers": []}]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = BadRows()
    good = frame_rows(read_qa_file(str(path), "data.train"), {}, "qa.jsonl", bad)
    assert good.ids == ["0", "3"] and good.answers == [[("Ada", 0)], []]
    assert bad.as_dict() == {"empty_question": {"count": 1, "first_rows": [1]},
                             "answer_not_in_context": {"count": 1, "first_rows": [2]}}


def test_squad_json_is_read_like_jsonl(tmp_path):
    squad = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "Ada wrote it.", "qas": [
        {"id": "a", "question": "Who wrote it?", "answers": [{"text": "Ada", "answer_start": 0}]},
        {"id": "b", "question": "Why?", "answers": [], "is_impossible": True}]}]}]}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad))
    rows = frame_rows(read_qa_file(str(path), "data.eval"), {}, "dev.json", BadRows())
    assert rows.ids == ["a", "b"] and rows.gold() == {"a": ["Ada"], "b": []} and rows.titles == ["T", "T"]


def slice_files(tmp_path, n_train):
    """Answerable questions of the vendored slice: training rows from one article, eval rows = the same
    questions (a small slice the model can fit in a few steps)."""
    rows = [json.loads(line) for line in gzip.open(VENDORED, "rt", encoding="utf-8")]
    chosen = [r for r in rows if r["answers"]["text"] and r["title"] == "Super_Bowl_50"][:n_train]
    for name in ("train", "eval"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))


def recipe(tmp_path, **extra):
    config = {"name": "qa_test", "task": "qa", "model": {"name": "minilm", "max_length": 96},
              "data": {"train": str(tmp_path / "train.jsonl"), "eval": str(tmp_path / "eval.jsonl")},
              "qa": {"doc_stride": 24, **extra}, "adapter": {"variant": "none"},
              "train": {"lr": 3e-4, "epochs": 5, "batch_size": 8, "precision": "fp32", "warmup_ratio": 0.0},
              "eval": {"batch_size": 32}, "output_dir": str(tmp_path / "runs")}
    path = tmp_path / "qa.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_recipe(str(path), [])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("qa")
    slice_files(tmp_path, 24)
    config = recipe(tmp_path, no_answer=True)
    source, task = load_task(config)
    model, _, _ = prepare_model(config, task, source)
    untrained = task.evaluate(model)
    outcome = run_recipe(config)[0]
    return untrained, outcome


def test_short_run_beats_the_untrained_head(trained):
    untrained, outcome = trained
    metrics = outcome.summary["metrics"]
    assert metrics["HasAns_total"] == 24 and "NoAns_total" not in metrics
    assert metrics["f1"] > untrained["f1"] + 20
    summary = json.loads((outcome.run_dir / "summary.json").read_text())
    assert {"exact", "f1", "HasAns_f1", "best_f1"} <= set(summary["metrics"])
    assert json.loads((outcome.run_dir / "task_state.json").read_text())["null_threshold"] == metrics["null_threshold"]


def test_predict_on_the_reloaded_artifact_gives_the_run_predictions(trained, capsys):
    from tunelab.cli import main
    from tunelab.eval.predict import predict_run

    _, outcome = trained
    run = outcome.run_dir
    lines = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (run.parent.parent.parent / "eval.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    predicted = predict_run(run, [{"question": by_id[x["id"]]["question"], "context": by_id[x["id"]]["context"]}
                                  for x in lines])
    for line, result in zip(lines, predicted, strict=True):
        assert result["answer"] == line["prediction"]
        if result["answer"]:
            context = by_id[line["id"]]["context"]
            assert context[result["start"]:result["end"]] == result["answer"]
            assert result["score"] == pytest.approx(line["score"], abs=1e-3)
    first = by_id[lines[0]["id"]]
    assert main(["predict", str(run), "--question", first["question"], "--context", first["context"]]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == lines[0]["prediction"]
