"""`tunelab predict` on a classification run: text in, label and probabilities out, equal to the run's own
eval predictions; bad inputs are one-line errors."""

import json

import pandas as pd
import pytest

from tunelab.errors import TunelabError
from tunelab.eval.predict import predict_run, read_inputs
from tunelab.recipes import validate
from tunelab.runner import run_recipe


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cls")
    rows = ["text,label"] + [f"great wonderful movie number {i},pos" if i % 2 else f"awful boring film number {i},neg"
                             for i in range(40)]
    (folder / "reviews.csv").write_text("\n".join(rows) + "\n")
    config = validate({"name": "cls", "output_dir": str(folder / "runs"), "model": {"name": "minilm", "max_length": 32},
                       "data": {"train": str(folder / "reviews.csv")},
                       "train": {"epochs": 2, "batch_size": 8, "precision": "fp32", "lr": 2e-3}})
    return run_recipe(config)[0].run_dir


def test_classification_predict_matches_the_run_predictions(classification_run, tmp_path, capsys):
    from tunelab.cli import main

    expected = pd.read_csv(classification_run / "predictions.csv")
    results = predict_run(classification_run, [{"text": t} for t in expected["text"]])
    assert [r["label"] for r in results] == expected["prediction"].tolist()
    for r in results:
        assert set(r["probabilities"]) == {"neg", "pos"} and sum(r["probabilities"].values()) == pytest.approx(1.0)
        assert r["probabilities"][r["label"]] == max(r["probabilities"].values())
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"text": expected["text"][0]}) + "\n")
    assert main(["predict", str(classification_run), "--file", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == expected["prediction"][0]


def test_bad_inputs_are_one_line_errors(classification_run, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(TunelabError, match=r"broken.jsonl:2: not a JSON object"):
        read_inputs(path)
    with pytest.raises(TunelabError, match="row 0: give 'text'"):
        predict_run(classification_run, [{"question": "?"}])
    with pytest.raises(TunelabError, match="not a finished tunelab run"):
        predict_run(tmp_path, [{"text": "x"}])
