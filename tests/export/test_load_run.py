"""`load_run`: the run's model exactly as saved (through the shared run loader), ready to export."""

from __future__ import annotations

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.export.load_run import check_transformers_model, load_run

from .tiny_runs import IDS, classification_run, sft_run


@pytest.mark.parametrize("num_labels", [2, 5])
def test_classifier_keeps_its_label_names(tmp_path, num_labels):
    run = load_run(classification_run(tmp_path, "lora", num_labels=num_labels))
    assert run.model(IDS).logits.shape == (2, num_labels)
    assert run.model.config.id2label == {i: f"class_{i}" for i in range(num_labels)}
    assert run.variants == {"lora"} and not run.is_causal_lm


def test_adapter_weights_are_the_saved_ones(tmp_path):
    from transformers import AutoModelForCausalLM

    run_dir = sft_run(tmp_path, "dora")
    first, second = load_run(run_dir), load_run(run_dir)
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    with torch.no_grad():
        assert torch.equal(first.model(IDS).logits, second.model(IDS).logits)
        assert (first.model(IDS).logits - base(IDS).logits).abs().max() > 1e-2  # the adapter is really there
    assert first.is_causal_lm and first.variants == {"dora"}
    assert first.model.config.use_cache is True  # training switched it off; exported models generate


def test_full_fine_tune_has_no_adapters(tmp_path):
    run = load_run(sft_run(tmp_path, "none"))
    assert run.variants == set() and run.config.adapter.variant == "none"


def test_changed_base_weights_are_refused(tmp_path):
    from transformers import AutoModelForCausalLM

    run_dir = sft_run(tmp_path, "lora")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    with torch.no_grad():
        base.lm_head.weight.add_(1.0)
    base.save_pretrained(tmp_path / "base")
    with pytest.raises(TunelabError, match="was trained on base"):
        load_run(run_dir)


def test_not_a_run_dir(tmp_path):
    with pytest.raises(TunelabError, match="not a finished tunelab run"):
        load_run(tmp_path)


def test_from_scratch_models_are_refused():
    with pytest.raises(TunelabError, match="from-scratch Linear"):
        check_transformers_model(torch.nn.Linear(2, 2), "runs/x")
