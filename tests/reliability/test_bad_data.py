"""Bad data, as it arrives from the internet: each kind of bad row is counted with its row number and
skipped (data.on_error: skip), or stops the run with one line naming the first one (fail); a good row is
never lost because a neighbour is bad."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.assets.models import load_tokenizer, resolve_model
from tunelab.config import DataConfig
from tunelab.data.tables import load_frames
from tunelab.errors import TunelabError
from tunelab.recipes import validate
from tunelab.tasks.classification import ClassificationTask

GOOD = [("a fine movie", "pos"), ("a dull movie", "neg"), ("great acting", "pos"), ("weak plot", "neg"),
        ("loved it", "pos"), ("hated it", "neg")]


def write_csv(path: Path, rows: list[tuple[str, str]], raw_tail: bytes = b"") -> Path:
    body = "text,label\n" + "".join(f"{t},{label}\n" for t, label in rows)
    path.write_bytes(body.encode() + raw_tail)
    return path


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return load_tokenizer(resolve_model("minilm"))


def classification(tmp_path: Path, train: Path, evaluation: Path, on_error: str = "skip") -> ClassificationTask:
    config = validate({"task": "classification", "model": {"name": "minilm", "max_length": 32},
                       "data": {"train": str(train), "eval": str(evaluation), "on_error": on_error}})
    return ClassificationTask(config)


def test_each_bad_classification_row_is_counted_with_its_row_and_skipped(tmp_path, minilm_tokenizer):
    rows = [*GOOD, ("", "pos"), ("no label here", ""), ("a fine movie", "pos")]  # rows 6, 7, 8
    train = write_csv(tmp_path / "train.csv", rows, raw_tail=b"caf\xe9 au lait,pos\n")  # row 9: Latin-1 byte
    evaluation = write_csv(tmp_path / "eval.csv", [("fine", "pos"), ("dull", "neg"), ("odd", "neutral")])
    task = classification(tmp_path, train, evaluation)
    task.prepare_data(minilm_tokenizer, "minilm", None)
    assert task.label_names == ["neg", "pos"]  # no class named "" and no "neutral"
    assert task.train_size == len(GOOD) and len(task.eval_set) == 2
    assert task.bad["train"].as_dict() == {"empty_text": {"count": 1, "first_rows": [6]},
                                           "missing_label": {"count": 1, "first_rows": [7]},
                                           "duplicate_row": {"count": 1, "first_rows": [8]}}
    assert task.bad["eval"].as_dict() == {"unknown_eval_label": {"count": 1, "first_rows": [2]}}
    frames = load_frames(DataConfig(train=str(train), eval=str(evaluation)))
    assert frames.bad_train.as_dict() == {"undecodable_bytes": {"count": 1, "first_rows": [9]}}


def test_on_error_fail_names_the_first_bad_row(tmp_path, minilm_tokenizer):
    train = write_csv(tmp_path / "train.csv", [*GOOD, ("", "pos")])
    evaluation = write_csv(tmp_path / "eval.csv", GOOD[:2])
    task = classification(tmp_path, train, evaluation, on_error="fail")
    with pytest.raises(TunelabError, match=r"row 6: empty text \(data.on_error: fail"):
        task.prepare_data(minilm_tokenizer, "minilm", None)
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"text,label\nfine,pos\n\xff\xfe,neg\n")
    with pytest.raises(TunelabError, match="row 1: undecodable bytes"):
        load_frames(DataConfig(train=str(broken), eval=str(evaluation), on_error="fail"))


def test_a_malformed_json_line_costs_one_row(tmp_path):
    lines = [json.dumps({"text": t, "label": label}) for t, label in GOOD]
    lines.insert(2, '{"text": "cut off", "label": ')  # row 2
    lines.insert(4, "[1, 2, 3]")  # row 4: JSON, but not a record
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    frames = load_frames(DataConfig(train=str(path), eval_fraction=0.5))
    assert frames.bad_train.as_dict() == {"malformed_json": {"count": 2, "first_rows": [2, 4]}}
    assert len(frames.train) + len(frames.eval) == len(GOOD)
    kept = set(frames.train["text"]) | set(frames.eval["text"])
    assert kept == {t for t, _ in GOOD}


def test_integer_labels_with_an_empty_cell_stay_integers(tmp_path, minilm_tokenizer):
    rows = [(t, str(i % 2)) for i, (t, _) in enumerate(GOOD)] + [("no label", "")]
    train = write_csv(tmp_path / "train.csv", rows)
    evaluation = write_csv(tmp_path / "eval.csv", [("fine", "1"), ("dull", "0")])
    task = classification(tmp_path, train, evaluation)
    task.prepare_data(minilm_tokenizer, "minilm", None)
    assert task.label_names == ["0", "1"] and task.bad["train"].counts == {"missing_label": 1}
    assert task.train_set.targets.dtype.kind == "i"


def test_each_bad_sft_row_is_counted_with_its_row_and_skipped(tmp_path):
    """A chat with no assistant turn, an empty answer, a missing field, malformed messages, a torn JSON
    line and a prompt that leaves no answer within max_length: counted per kind, row numbers as read."""
    from tests.tasks.tiny_chat import chat_tokenizer
    from tunelab.tasks.sft import SFTTask

    def chat(user, reply):
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}

    rows = [json.dumps(chat("what colour is the sky?", "blue")),
            json.dumps({"messages": [{"role": "user", "content": "anyone there?"}]}),  # 1: no assistant turn
            json.dumps(chat("say nothing", "   ")),  # 2: empty answer
            json.dumps({"messages": "user: hi"}),  # 3: malformed messages
            '{"messages": [{"role": "user"',  # 4: malformed JSON
            json.dumps(chat("grass? " * 400, "green")),  # 5: prompt past max_length
            json.dumps(chat("and snow?", "white"))]
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(rows) + "\n")
    evaluation = tmp_path / "eval.jsonl"
    evaluation.write_text(json.dumps(chat("and coal?", "black")) + "\n" + json.dumps({"messages": None}) + "\n")
    config = {"task": "sft", "model": {"name": "smollm2-135m", "max_length": 48},
              "data": {"train": str(train), "eval": str(evaluation), "format": "messages"}}
    task = SFTTask(validate(config))
    task.prepare_data(chat_tokenizer(), "tiny", None)
    assert task.train_size == 2 and len(task.eval_ids) == 1
    assert {kind: rows["first_rows"] for kind, rows in task.bad["train"].as_dict().items()} == {
        "malformed_json": [4], "no_assistant_turn": [1], "empty_answer": [2], "malformed_messages": [3],
        "prompt_too_long": [5]}
    assert task.bad["eval"].counts == {"malformed_messages": 1}
    assert "train: 5 bad rows skipped" in "\n".join(task.preflight().warnings)
    config["data"]["on_error"] = "fail"
    with pytest.raises(TunelabError, match=r"row 4: malformed json \(data.on_error: fail"):
        SFTTask(validate(config)).prepare_data(chat_tokenizer(), "tiny", None)
