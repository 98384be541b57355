"""A model folder that ships its own Python code (`auto_map` in config.json or tokenizer_config.json) never
runs it unless the recipe sets `model.trust_remote_code: true`: every loader refuses with one line naming
that key, and the code's import side effect (a marker file) never happens. With the key, it loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.export.tiny_bpe import byte_bpe_tokenizer
from tunelab.cli import main
from tunelab.config import ModelConfig
from tunelab.errors import TunelabError
from tunelab.models.causal_lm import load_causal_lm
from tunelab.models.source import PretrainedSource, model_source_for
from tunelab.recipes import validate
from tunelab.tasks.registry import task_class

CUSTOM_CODE = '''"""What a hostile repo's code does on import: here, only write a marker file."""
from pathlib import Path

Path({marker!r}).write_text("the folder's own code ran")

from transformers import PretrainedConfig, PreTrainedTokenizerFast


class MarkerConfig(PretrainedConfig):
    model_type = "tunelab_marker"


class MarkerTokenizer(PreTrainedTokenizerFast):
    pass
'''


def folder_with_code(root: Path, where: str) -> tuple[Path, Path]:
    """A model folder (a real byte-level BPE tokenizer) whose `where` ('model' or 'tokenizer') config maps
    onto classes in marker_code.py; returns (folder, marker path)."""
    folder, marker = root / f"custom_{where}", root / f"marker_{where}"
    folder.mkdir()
    (folder / "marker_code.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    byte_bpe_tokenizer().save_pretrained(folder)
    config: dict = {"model_type": "tunelab_marker", "architectures": ["MarkerModel"]}
    if where == "model":
        config["auto_map"] = {name: f"marker_code.{cls}" for name, cls in [
            ("AutoConfig", "MarkerConfig"), ("AutoModelForCausalLM", "MarkerModel"),
            ("AutoModelForSequenceClassification", "MarkerModel"), ("AutoModelForQuestionAnswering", "MarkerModel")]}
    (folder / "config.json").write_text(json.dumps(config))
    if where == "tokenizer":
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        tokenizer_config.update(tokenizer_class="MarkerTokenizer",
                                auto_map={"AutoTokenizer": [None, "marker_code.MarkerTokenizer"]})
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder, marker


def source_of(folder: Path) -> PretrainedSource:
    return PretrainedSource(str(folder), None, folder, "test", tokenizer=None, tokenizer_id="")


def task_model(task_name: str, folder: Path):
    task = task_class(task_name)(validate({"task": task_name, "model": {"name": str(folder)},
                                                 "data": {"train": "unused.csv"}}))
    task.label_names = ["neg", "pos"]  # what prepare_data would have found (classification)
    return task.build_model(source_of(folder))


LOADERS = {  # (where the code is, how tunelab loads it)
    "tokenizer of a recipe's model": ("tokenizer", lambda f: model_source_for(ModelConfig(name=str(f)))),
    "causal LM (sft, dpo, grpo)": ("model", lambda f: load_causal_lm(f, ModelConfig(name=str(f)))),
    "classifier": ("model", lambda f: task_model("classification", f)),
    "extractive QA model": ("model", lambda f: task_model("qa", f)),
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_the_folders_code_never_runs_without_the_key(tmp_path, loader):
    where, load = LOADERS[loader]
    folder, marker = folder_with_code(tmp_path, where)
    with pytest.raises(TunelabError) as caught:
        load(folder)
    message = str(caught.value)
    assert message.startswith("model.trust_remote_code:") and "\n" not in message
    assert "model.trust_remote_code: true" in message
    assert not marker.exists()


@pytest.mark.parametrize("where", ["model", "tokenizer"])
def test_tunelab_run_stops_with_one_line_and_exit_2(tmp_path, capsys, where):
    folder, marker = folder_with_code(tmp_path, where)
    (tmp_path / "toy.csv").write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(16)))
    recipe = {"name": "rc", "task": "classification", "model": {"name": str(folder), "max_length": 16},
              "data": {"train": str(tmp_path / "toy.csv")}, "adapter": {"variant": "none"},
              "train": {"max_steps": 1, "batch_size": 4}, "output_dir": str(tmp_path / "runs")}
    (tmp_path / "rc.yaml").write_text(yaml.safe_dump(recipe))
    code = main(["run", str(tmp_path / "rc.yaml")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("tunelab: error:")]
    assert code == 2, err
    assert len(errors) == 1 and "model.trust_remote_code" in errors[0], err
    assert "Traceback" not in err
    assert not marker.exists()


def test_with_the_key_the_folders_code_loads(tmp_path):
    folder, marker = folder_with_code(tmp_path, "tokenizer")
    source = model_source_for(ModelConfig(name=str(folder), trust_remote_code=True))
    assert type(source.tokenizer).__name__ == "MarkerTokenizer"
    assert marker.read_text() == "the folder's own code ran"
