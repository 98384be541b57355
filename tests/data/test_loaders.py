import gzip

import pandas as pd
import pytest

from tunelab.assets.datasets import DATASETS, VENDORED, resolve_dataset
from tunelab.config import DataConfig
from tunelab.data.loaders import read_table
from tunelab.data.tables import load_tables
from tunelab.errors import TunelabError


def test_reads_each_format(tmp_path):
    frame = pd.DataFrame({"text": ["a b", "c"], "label": [0, 1]})
    frame.to_csv(tmp_path / "x.csv", index=False)
    frame.to_json(tmp_path / "x.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "x.parquet") if _has_parquet() else None
    (tmp_path / "x.txt").write_text("line one\n\nline two\n")
    with gzip.open(tmp_path / "x.csv.gz", "wt") as handle:
        frame.to_csv(handle, index=False)
    for name in ["x.csv", "x.jsonl", "x.csv.gz"] + (["x.parquet"] if _has_parquet() else []):
        assert read_table(tmp_path / name)["text"].tolist() == ["a b", "c"]
    assert read_table(tmp_path / "x.txt")["text"].tolist() == ["line one", "line two"]


def _has_parquet():
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def test_missing_file_and_unknown_format_are_one_line(tmp_path):
    with pytest.raises(TunelabError, match="data.train: file not found"):
        read_table(tmp_path / "none.csv")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(TunelabError, match="unknown data format"):
        read_table(tmp_path / "x.xlsx")


def test_column_mapping_and_missing_column(tiny_csv):
    tables = load_tables(DataConfig(train=str(tiny_csv), columns={"text": "text", "label": "label"}))
    assert len(tables.train) + len(tables.eval) == 40
    with pytest.raises(TunelabError, match="column 'review' not in"):
        load_tables(DataConfig(train=str(tiny_csv), columns={"text": "review"}))


def test_ag_news_demo_split_is_stratified_and_fixed():
    tables = load_tables(DataConfig(dataset="ag_news_demo"))
    assert (len(tables.train), len(tables.eval)) == (5600, 2000)
    assert tables.eval["label"].value_counts().tolist() == [500, 500, 500, 500]
    again = load_tables(DataConfig(dataset="ag_news_demo"))
    assert again.eval["description"].tolist() == tables.eval["description"].tolist()


def test_vendored_files_match_provenance():
    import hashlib

    provenance = (VENDORED / "PROVENANCE.md").read_text()
    for spec in DATASETS.values():
        for ref in (spec.train, spec.eval):
            if ref and ref.startswith("vendored:"):
                path = VENDORED / ref.split(":", 1)[1]
                assert hashlib.sha256(path.read_bytes()).hexdigest() in provenance, path.name


def test_unknown_dataset_suggests():
    with pytest.raises(TunelabError, match="did you mean 'ag_news_demo'"):
        resolve_dataset("ag_news_dem")


def test_limit_trims_training_rows():
    tables = load_tables(DataConfig(dataset="ag_news_demo", limit=100, eval_limit=50))
    assert (len(tables.train), len(tables.eval)) == (100, 50)
