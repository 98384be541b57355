"""Every registered dataset (`tunelab data`) is consumed by a task a recipe can name: classification sets
load with their text and label columns and the declared class count, SFT sets turn into conversations
that end in an assistant reply. Sets from ../shared/data are checked where that folder exists."""

from __future__ import annotations

import pytest

from tunelab.assets.datasets import DATASETS, list_datasets, shared_data_dir
from tunelab.config import DataConfig
from tunelab.data.conversations import detect_format, to_conversations
from tunelab.data.tables import load_frames, load_tables
from tunelab.tasks.registry import TASK_REGISTRY

NAMES = sorted(DATASETS)


def test_every_listed_dataset_names_a_task_recipes_can_run():
    listed = {row["name"]: row["task"] for row in list_datasets()}
    assert sorted(listed) == NAMES
    assert {name: task for name, task in listed.items() if task not in TASK_REGISTRY} == {}


@pytest.mark.parametrize("name", NAMES)
def test_registered_dataset_feeds_its_task(name):
    spec = DATASETS[name]
    if not spec.train.startswith("vendored:") and shared_data_dir() is None:
        pytest.skip("needs ../shared/data")
    config = DataConfig(dataset=name, eval_limit=200)
    if spec.task == "classification":
        tables = load_tables(config)
        assert set(tables.text_fields) <= set(tables.train.columns) and len(tables.eval) > 0
        classes = set(tables.train[tables.label]) | set(tables.eval[tables.label])
        assert classes == set(range(len(spec.label_names)))  # labels are 0..k-1, one name each
        return
    if spec.task == "qa":
        from tunelab.data.qa_rows import load_qa_frames

        train, evaluation, _ = load_qa_frames(config)
        assert {"question", "context", "answers"} <= set(train.columns) and len(evaluation) > 0
        return
    if spec.task == "lm":
        from tunelab.recipes import validate
        from tunelab.tasks.lm import LMTask

        task = LMTask(validate({"task": "lm", "data": {"dataset": name}, "model": {"arch": {"type": "gpt"}}}))
        task.prepare_data(None, "", None)
        assert task.train_size > 0 and len(task.eval_ids) > 0 and task.tokenizer.vocab_size > 10
        return
    if spec.task == "grpo":
        from tests.tasks.tiny_chat import chat_tokenizer
        from tunelab.data.prompt_rows import load_prompt_rows

        rows, bad = load_prompt_rows(config, chat_tokenizer(), 100_000, need_answer=True)
        assert len(rows["train"]) > 0 and len(rows["eval"]) > 0 and bad["train"].total == 0
        assert all(str(answer).strip() for answer in rows["eval"].columns["answer"])
        return
    if spec.task != "sft":
        pytest.fail(f"{name}: no check yet for task {spec.task!r}: add one here")
    frames = load_frames(config)
    defaults = dict(spec.columns)
    fmt = detect_format(frames.train, config.model_copy(update={"format": spec.sft_format}), defaults)
    head = frames.train.head(50).dropna()
    conversations = to_conversations(head, config, fmt, defaults, name)
    assert len(conversations) == len(head) > 0
    assert all(c[0]["role"] == "user" and c[-1]["role"] == "assistant" and c[-1]["content"] for c in conversations)
