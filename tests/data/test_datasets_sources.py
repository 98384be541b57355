"""`datasets` folders and hub ids through the loaders the tasks use (load_tables / load_frames): a
save_to_disk Dataset and DatasetDict, a folder of JSONL files, a separate data.eval folder, and the
one-line offline error for an unknown hub id (fast, with or without HF_HUB_OFFLINE)."""

from __future__ import annotations

import json
import time

import datasets
import pytest

from tunelab.config import DataConfig  # noqa: E402
from tunelab.data.conversations import to_conversations  # noqa: E402
from tunelab.data.loaders import eval_split, open_source, train_split  # noqa: E402
from tunelab.data.tables import ROW, load_frames, load_tables  # noqa: E402
from tunelab.errors import TunelabError  # noqa: E402

LABELS = datasets.ClassLabel(names=["neg", "pos"])
FEATURES = datasets.Features({"text": datasets.Value("string"), "label": LABELS})


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    """load_dataset caches an Arrow copy of local files; keep it out of ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def reviews(n: int, start: int = 0) -> datasets.Dataset:
    texts = [f"review {i} {'great' if i % 2 else 'awful'}" for i in range(start, start + n)]
    return datasets.Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(start, start + n)]},
                                      features=FEATURES)


def test_saved_dataset_is_held_out_and_keeps_class_names(tmp_path):
    reviews(20).save_to_disk(tmp_path / "one")
    tables = load_tables(DataConfig(train=str(tmp_path / "one"), eval_fraction=0.25))
    assert (len(tables.train), len(tables.eval)) == (15, 5)
    assert [c for c in tables.train.columns if c != ROW] == ["text", "label"] and tables.label_names == ("neg", "pos")
    everything = sorted(tables.train["text"].tolist() + tables.eval["text"].tolist())
    assert everything == sorted(reviews(20)["text"])  # every row once, none invented
    by_dataset = load_tables(DataConfig(dataset=str(tmp_path / "one"), eval_fraction=0.25))  # same reader
    assert by_dataset.eval["text"].tolist() == tables.eval["text"].tolist()


def test_saved_dataset_dict_uses_its_train_and_validation_splits(tmp_path):
    datasets.DatasetDict({"train": reviews(12), "validation": reviews(4, start=100)}).save_to_disk(tmp_path / "dd")
    tables = load_tables(DataConfig(train=str(tmp_path / "dd")))
    assert tables.train["text"].tolist() == reviews(12)["text"]
    assert tables.eval["text"].tolist() == reviews(4, start=100)["text"]
    assert tables.source == f"{tmp_path / 'dd'} [train]" and tables.label_names == ("neg", "pos")


def test_folder_of_jsonl_files_with_column_mapping_and_a_separate_eval_folder(tmp_path):
    folder = tmp_path / "jsonl"
    folder.mkdir()
    for split, rows in (("train", 6), ("test", 3)):
        lines = [json.dumps({"review": f"{split} {i}", "stars": i % 3}) for i in range(rows)]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(train=str(folder), columns={"text": "review", "label": "stars"})
    tables = load_tables(cfg)
    assert tables.train["review"].tolist() == [f"train {i}" for i in range(6)]
    assert tables.eval["review"].tolist() == ["test 0", "test 1", "test 2"]
    assert tables.eval["stars"].tolist() == [0, 1, 2] and tables.text_fields == ("review",)
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"review": ["v"], "stars": [1]})}).save_to_disk(
        tmp_path / "eval")
    separate = load_tables(cfg.model_copy(update={"eval": str(tmp_path / "eval")}))
    assert len(separate.train) == 6 and separate.eval["review"].tolist() == ["v"]


def test_messages_rows_from_a_saved_dataset_become_conversations(tmp_path):
    chats = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(5)]
    datasets.Dataset.from_dict({"messages": chats, "prompt": [c[0]["content"] for c in chats]}).save_to_disk(
        tmp_path / "chat")
    cfg = DataConfig(train=str(tmp_path / "chat"), format="messages", eval_fraction=0.2)
    frames = load_frames(cfg)
    got = to_conversations(frames.train, cfg, "messages") + to_conversations(frames.eval, cfg, "messages")
    assert len(frames.eval) == 1 and sorted(got, key=lambda c: c[0]["content"]) == chats


def test_split_choice_for_datasets_without_a_train_split(tmp_path):
    datasets.DatasetDict({"train_sft": reviews(3), "test_sft": reviews(2)}).save_to_disk(tmp_path / "uc")
    with pytest.raises(TunelabError, match=r"data.train: .* has no 'train' split \(splits: train_sft, test_sft\)"):
        load_tables(DataConfig(train=str(tmp_path / "uc")))
    source = open_source(str(tmp_path / "uc"), "data.train")  # what a data.split / data.eval_split key selects
    assert train_split(source, "train_sft") == "train_sft" and eval_split(source, "test_sft", "train_sft") == "test_sft"
    assert eval_split(source, beside="train_sft") is None  # no validation/test split: held out of train
    with pytest.raises(TunelabError, match="has no split 'dev'"):
        eval_split(source, "dev")


def test_unknown_hub_id_offline_is_one_line(tmp_path):
    start = time.monotonic()
    for key, cfg in (("data.train", DataConfig(train="nobody-xyz/no-such-set")),
                     ("data.dataset", DataConfig(dataset="nobody-xyz/no-such-set"))):
        with pytest.raises(TunelabError) as error:
            load_tables(cfg)
        message = str(error.value)
        assert message.startswith(f"{key}: 'nobody-xyz/no-such-set' is not a local file or folder")
        assert "hub is unreachable (offline: HF_HUB_OFFLINE=1)" in message and "\n" not in message
    assert time.monotonic() - start < 20


def test_unreachable_hub_without_offline_variables_fails_fast(monkeypatch):
    """No HF_HUB_OFFLINE set and no network: the probe notices and nothing retries for minutes."""
    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy",
                 "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused at once
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    start = time.monotonic()
    with pytest.raises(TunelabError, match=r"^data.train: .*unreachable \(offline: cannot connect to 127.0.0.1\)$"):
        load_frames(DataConfig(train="nobody-xyz/no-such-set"))
    assert time.monotonic() - start < 20
    assert datasets.config.HF_HUB_OFFLINE is True  # later loads in this process stay offline too


def test_missing_file_and_unknown_name_stay_plain_errors(tmp_path):
    with pytest.raises(TunelabError, match=r"^data.train: file not found: .*reviews.csv$"):
        load_tables(DataConfig(train=str(tmp_path / "reviews.csv")))
    with pytest.raises(TunelabError, match="unknown dataset 'ag_news_dem' .*did you mean 'ag_news_demo'"):
        load_tables(DataConfig(dataset="ag_news_dem"))


def test_data_split_keys_select_the_splits_of_a_saved_dataset(tmp_path):
    datasets.DatasetDict({"train_sft": reviews(6), "test_sft": reviews(3, start=50)}).save_to_disk(tmp_path / "uc")
    tables = load_tables(DataConfig(train=str(tmp_path / "uc"), split="train_sft", eval_split="test_sft"))
    assert sorted(tables.train["text"]) == sorted(reviews(6)["text"])
    assert sorted(tables.eval["text"]) == sorted(reviews(3, start=50)["text"])
