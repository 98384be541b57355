"""`--gguf`: transformers' own GGUF reader gets back the merged model and its tokenizer.

Round trips use a tiny random Llama over a byte-level BPE tokenizer trained in the test (a GGUF with
SmolLM2's 49k-token vocabulary takes transformers ~20 s to parse per load); the SmolLM2 tokenizer itself
is checked once, through the same writer.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.export.gguf_file import export_run_gguf
from tunelab.export.gguf_llama import permute_qk
from tunelab.export.load_run import load_run

from .tiny_bpe import byte_bpe_tokenizer, random_llama
from .tiny_runs import build_run, sft_run

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
PROMPTS = ["The capital of France is", "Once upon a time", "1 + 1 = 42?", "def add(a, b):",
           "<|im_start|>user\nHello, how are you?<|im_end|>\n<|im_start|>assistant\n"]


def read_back(folder, name: str = "model.gguf"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder, gguf_file=name)


def greedy(model, tokenizer, prompt: str) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=8, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def test_permute_qk_is_what_transformers_undoes():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    undo = LlamaTensorProcessor({"num_attention_heads": 4, "num_key_value_heads": 2})
    q, k = torch.randn(4 * 8, 32), torch.randn(2 * 8, 32)
    for weight, name in ((q, "blk.0.attn_q.weight"), (k, "blk.0.attn_k.weight")):
        written = permute_qk(weight, 4 if "attn_q" in name else 2).numpy()
        assert not np.array_equal(written, weight.numpy())
        assert np.array_equal(undo.process(written, name).weights, weight.numpy())


@pytest.mark.parametrize("tied,variant", [(True, "lora"), (False, "dora"), (True, "none")])
def test_gguf_round_trip_gives_the_same_greedy_tokens(tmp_path, tied, variant):
    tokenizer = byte_bpe_tokenizer()
    run_dir = sft_run(tmp_path, variant, model=random_llama(len(tokenizer), tied), tokenizer=tokenizer)
    out = export_run_gguf(run_dir, tmp_path / "gguf" / "model.gguf")
    reference = load_run(run_dir).model  # adapters applied, not merged: the merge is under test too
    model, read_tokenizer = read_back(out.parent)
    assert model.config.tie_word_embeddings is tied
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            assert read_tokenizer(prompt, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
            assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=0)
            assert greedy(model, read_tokenizer, prompt) == greedy(reference, tokenizer, prompt)
    assert read_tokenizer.chat_template == tokenizer.chat_template


def test_gguf_tensor_names_types_and_tied_head(tmp_path):
    tokenizer = byte_bpe_tokenizer()
    run_dir = sft_run(tmp_path, "lora", model=random_llama(len(tokenizer), tied=True), tokenizer=tokenizer)
    reader = gguf.GGUFReader(export_run_gguf(run_dir, tmp_path / "m.gguf", float_type="f16"))
    types = {tensor.name: tensor.tensor_type.name for tensor in reader.tensors}
    assert "output.weight" not in types  # tied: llama.cpp reuses token_embd
    assert types["token_embd.weight"] == types["blk.1.attn_q.weight"] == "F16"
    assert types["output_norm.weight"] == types["blk.0.attn_norm.weight"] == "F32"
    assert {f"blk.{i}.{part}.weight" for i in range(2) for part in (
        "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "ffn_norm")} < set(types)
    field = reader.fields
    assert field["general.architecture"].contents() == "llama"
    assert field["llama.attention.head_count_kv"].contents() == 2
    assert field["tokenizer.ggml.model"].contents() == "gpt2"
    assert field["tokenizer.ggml.pre"].contents() == "gpt2"
    assert field["tokenizer.ggml.add_space_prefix"].contents() is False
    assert field["tokenizer.chat_template"].contents() == tokenizer.chat_template
    token_types = field["tokenizer.ggml.token_type"].contents()
    assert [token_types[tokenizer.convert_tokens_to_ids(t)] for t in ("<|im_end|>", "Ġthe")] == [3, 1]


def test_smollm2_tokenizer_round_trips(tmp_path):
    """SmolLM2's real tokenizer (49,152 tokens, 48,900 merges, ChatML specials) through the writer."""
    from transformers import AutoTokenizer

    from tunelab.assets.models import MODEL_ALIASES, package_root

    alias = MODEL_ALIASES["smollm2-135m"]
    root = package_root(alias)
    if root is None or not (root / alias.gguf_file).is_file():
        pytest.skip(f"{alias.package} is not installed ({alias.pip_command})")
    source = AutoTokenizer.from_pretrained(str(root), gguf_file=alias.gguf_file)
    run_dir = sft_run(tmp_path, "lora", model=random_llama(len(source), tied=True), tokenizer=source)
    out = export_run_gguf(run_dir, tmp_path / "smol.gguf")
    written = AutoTokenizer.from_pretrained(str(out.parent), gguf_file=out.name)
    chat = [{"role": "user", "content": "What is 12 + 30? Answer in one word."}]
    for text in [*PROMPTS, source.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)]:
        assert written(text)["input_ids"] == source(text)["input_ids"]
    assert written.chat_template == source.chat_template
    assert (written.bos_token, written.eos_token, written.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")


@pytest.mark.parametrize("make,out_name,needle", [
    (lambda tmp: build_run(tmp, "classification", "lora"), "m.gguf", "causal LMs only"),
    (lambda tmp: sft_run(tmp, "lora"), "m.gguf", "byte-level BPE"),  # the word-level test tokenizer
    (lambda tmp: sft_run(tmp, "ddora", model=random_llama(400, True), tokenizer=byte_bpe_tokenizer()),
     "m.gguf", "cannot be merged"),
    (lambda tmp: sft_run(tmp, "lora"), "model.bin", "must end in .gguf"),
])
def test_unsupported_runs_are_refused_before_writing(tmp_path, make, out_name, needle):
    run_dir = make(tmp_path)
    with pytest.raises(TunelabError, match=needle) as error:
        export_run_gguf(run_dir, tmp_path / "out" / out_name)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_non_llama_architectures_are_refused(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = byte_bpe_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    run_dir = sft_run(tmp_path, "lora", model=model, tokenizer=tokenizer)
    with pytest.raises(TunelabError, match="Llama-architecture"):
        export_run_gguf(run_dir, tmp_path / "m.gguf")
