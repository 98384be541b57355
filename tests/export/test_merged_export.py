"""`--merged`: plain transformers loads the folder and reproduces the adapted model; unmergeable refused."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from tunelab.errors import TunelabError
from tunelab.export.load_run import load_run
from tunelab.export.merged import export_run_merged

from .tiny_runs import IDS, build_run, sft_run

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def plain_load(task: str, folder) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForCausalLM if task == "sft" else AutoModelForSequenceClassification
    return auto.from_pretrained(folder).eval()


def saved_names(folder) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        return set(handle.keys())


@pytest.mark.parametrize("variant", ["lora", "dora", "none"])
@pytest.mark.parametrize("task", ["sft", "classification"])
def test_merged_folder_reproduces_the_run(tmp_path, task, variant):
    run_dir = build_run(tmp_path, task, variant)
    out = export_run_merged(run_dir, tmp_path / "merged")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    expected_model = load_run(run_dir).model
    merged = plain_load(task, out)
    # the weight names of the plain architecture, no adapter A/B/m or wrapped `.base.` linears
    plain_load(task, tmp_path / "base").save_pretrained(tmp_path / "plain")
    assert saved_names(out) == saved_names(tmp_path / "plain")
    with torch.no_grad():
        expected = expected_model(IDS).logits
        assert torch.allclose(merged(IDS).logits, expected, atol=1e-4, rtol=0)
        assert (plain_load(task, tmp_path / "base")(IDS).logits - expected).abs().max() > 1e-2
    if task == "classification":
        assert merged.config.id2label == {0: "class_0", 1: "class_1", 2: "class_2"}
    else:
        assert merged.config.use_cache is True


def test_adapter_on_a_tied_head_survives_the_reload(tmp_path):
    """A tied lm_head that was adapted stops sharing the embedding once merged; the folder must say so."""
    from tests.eval.tiny_lm import tiny_llama

    model = tiny_llama()
    model.config.tie_word_embeddings = True
    model.tie_weights()
    run_dir = sft_run(tmp_path, "lora", model=model, targets=["q_proj", "lm_head"])
    out = export_run_merged(run_dir, tmp_path / "merged")
    with torch.no_grad():
        expected = load_run(run_dir).model(IDS).logits
        reloaded = plain_load("sft", out)
        assert torch.allclose(reloaded(IDS).logits, expected, atol=1e-4, rtol=0)
    assert not reloaded.config.tie_word_embeddings


@pytest.mark.parametrize("variant", ["dora_scaled", "ddora"])
def test_unmergeable_variants_are_refused(tmp_path, variant):
    run_dir = build_run(tmp_path, "sft", variant)
    with pytest.raises(TunelabError, match="cannot be merged") as error:
        export_run_merged(run_dir, tmp_path / "merged")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "merged").exists()


def test_quantized_base_runs_are_not_merged(tmp_path):
    """QLoRA runs (4-bit base, CUDA only) load with packed base weights, which merge() cannot add to."""
    from tests.eval.tiny_lm import tiny_llama
    from tunelab.config import RunConfig
    from tunelab.export.load_run import RunModel
    from tunelab.export.merged import merged_model

    config = RunConfig.model_validate({"task": "sft", "model": {"name": "x", "quantize": "4bit"},
                                       "data": {"dataset": "tiny"}})
    with pytest.raises(TunelabError, match="QLoRA.*--peft"):
        merged_model(RunModel(tmp_path, config, tiny_llama(), None))
