"""Runner paths end to end on tiny local models: head-only training with and without the frozen-prefix
cache, a full fine-tune reloaded through the one artifact loader, and an interrupted SFT run resumed."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import BertForSequenceClassification

from tests.tasks.tiny_chat import save_chat_model, write_toy_sft
from tests.tasks.tiny_encoder import review_vocab, save_tiny_bert
from tunelab.models.artifact import load_run_model
from tunelab.recipes import validate
from tunelab.runner import run_recipe
from tunelab.tasks.sft import SFTTask

VOCAB = review_vocab()


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("encoder"), BertForSequenceClassification, VOCAB)


def encoder_recipe(model_dir, data, out, **train):
    return validate({"name": "enc", "model": {"name": str(model_dir), "max_length": 16},
                     "data": {"train": str(data), "eval_fraction": 0.25},
                     "adapter": {"variant": "none"}, "output_dir": str(out),
                     "train": {"lr": 5e-3, "epochs": 3, "batch_size": 8, "precision": "fp32", **train}})


def test_head_only_run_is_the_same_with_and_without_the_prefix_cache(tiny_encoder, tiny_csv, tmp_path):
    runs = {}
    for cached in (True, False):
        config = encoder_recipe(tiny_encoder, tiny_csv, tmp_path / str(cached), head_only=True,
                                frozen_prefix_cache=cached)
        runs[cached] = run_recipe(config)[0]
    with_cache, without = runs[True], runs[False]
    assert with_cache.summary["trainable_params"] == without.summary["trainable_params"] == 32 * 2 + 2
    assert with_cache.summary["metrics"]["accuracy"] == without.summary["metrics"]["accuracy"]
    a = load_file(str(with_cache.run_dir / "artifact" / "model.safetensors"))
    b = load_file(str(without.run_dir / "artifact" / "model.safetensors"))
    torch.testing.assert_close(a["classifier.weight"], b["classifier.weight"], atol=1e-5, rtol=1e-4)
    assert not torch.equal(a["classifier.weight"], load_file(str(tiny_encoder / "model.safetensors")).get(
        "classifier.weight", torch.zeros(0)))  # it did train


def test_full_fine_tune_reloads_with_identical_predictions(tiny_encoder, tiny_csv, tmp_path):
    outcome = run_recipe(encoder_recipe(tiny_encoder, tiny_csv, tmp_path))[0]
    assert outcome.summary["trainable_params"] == outcome.summary["total_params"]
    loaded = load_run_model(outcome.run_dir)
    saved = pd.read_csv(outcome.run_dir / "predictions.csv")
    batch = loaded.tokenizer(saved["text"].tolist(), padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    names = loaded.task.label_names
    assert [names[i] for i in logits.argmax(-1).tolist()] == saved["prediction"].tolist()
    assert names == ["neg", "pos"]


def sft_recipe(model_dir, data, out):
    return validate({
        "name": "sft_resume", "task": "sft", "output_dir": str(out),
        "model": {"name": str(model_dir), "max_length": 32}, "data": {"train": str(data), "eval": str(data)},
        "adapter": {"variant": "lora", "rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj"], "dropout": 0.1},
        "train": {"lr": 1e-2, "max_steps": 8, "batch_size": 4, "grad_accum": 2, "checkpoint_every": 3,
                  "precision": "fp32", "log_every": 1}})


def test_interrupted_sft_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    model_dir = save_chat_model(tmp_path / "model")
    data = write_toy_sft(tmp_path / "toy.jsonl", repeats=6)
    full = run_recipe(sft_recipe(model_dir, data, tmp_path / "full"))[0]

    original, calls = SFTTask.loss_fn, {"n": 0}

    def crash_in_step_five(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 9:  # micro-batch 1 of step 5, after the checkpoint at step 3
            raise KeyboardInterrupt
        return original(self, model, batch)

    monkeypatch.setattr(SFTTask, "loss_fn", crash_in_step_five)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(sft_recipe(model_dir, data, tmp_path / "resumed"))
    monkeypatch.setattr(SFTTask, "loss_fn", original)
    run_dir = next((tmp_path / "resumed").glob("sft_resume/*"))
    assert json.loads((run_dir / "checkpoints" / "last" / "position.json").read_text())["step"] == 3
    resumed = run_recipe(sft_recipe(model_dir, data, tmp_path / "resumed"), resume=run_dir)[0]
    assert resumed.summary["metrics"] == full.summary["metrics"]
    a = load_file(str(full.run_dir / "artifact" / "adapter_model.safetensors"))
    b = load_file(str(resumed.run_dir / "artifact" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == list(range(1, 9))  # no doubled lines after resume
    assert np.isfinite(resumed.summary["metrics"]["eval_loss"])
