"""A merged transformers Llama as llama.cpp's GGUF expects it: `llama.*` metadata and named tensors.

Tensor names come from gguf-py's own table (`gguf.get_tensor_name_map`): `model.embed_tokens` ->
`token_embd`, `model.layers.N.self_attn.q_proj` -> `blk.N.attn_q`, ..., `model.norm` -> `output_norm`,
`lm_head` -> `output`. transformers reads a GGUF back through the same table, so the two cannot drift.

Two layout rules:
- q/k rows are permuted. transformers' rotary embedding rotates the two halves of each head
  (`rotate_half`), llama.cpp rotates adjacent pairs; llama.cpp's converter (`LlamaModel.permute` in
  convert_hf_to_gguf.py) reorders the rows of q_proj and k_proj so its rope sees the same pairs, and
  transformers' GGUF loader undoes it (`LlamaTensorProcessor._reverse_permute_weights`). `permute_qk`
  is that inverse: per head, row (half h, index i) moves to row (2i + h).
- A tied head (SmolLM2) is not written: llama.cpp and transformers both fall back to `token_embd` when
  there is no `output.weight`, and transformers sets `tie_word_embeddings` from its absence.

Norm weights stay F32 in every file type, as llama.cpp's converter keeps them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tunelab.errors import TunelabError

FloatType = Literal["f32", "f16"]


def check_llama(model: nn.Module) -> None:
    """Refuse, in one line, what this writer (and transformers' GGUF reader) would not round-trip."""
    config = model.config
    if getattr(config, "model_type", None) != "llama":
        raise TunelabError(f"--gguf writes Llama-architecture causal LMs (SmolLM2, Llama); this model is "
                           f"{getattr(config, 'model_type', type(model).__name__)!r}")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise TunelabError(f"--gguf: rope scaling {rope.get('rope_type', rope.get('type'))!r} is not written; "
                           "only plain RoPE (rope_type default) round-trips through GGUF here")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise TunelabError("--gguf: Llama models with attention or MLP biases are not supported "
                           "(transformers' GGUF reader drops them)")


def head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def rope_theta(config: Any) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def write_llama_metadata(writer: Any, config: Any, name: str, float_type: FloatType) -> None:
    """The `general.*` and `llama.*` keys llama.cpp needs to build the graph."""
    import gguf

    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if float_type == "f16" else gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim(config))
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if head_dim(config) != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim(config))  # llama.cpp assumes hidden/heads unless told
        writer.add_value_length(head_dim(config))


def permute_qk(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """(n_head·d, in) rows from transformers' half-split rotary layout to llama.cpp's interleaved one."""
    d = weight.shape[0] // n_head // 2
    return weight.reshape(n_head, 2, d, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def head_is_tied(model: nn.Module) -> bool:
    """True when the output head equals the token embedding (shared, or equal after merging)."""
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return head is embed or (head.shape == embed.shape and torch.equal(head, embed))


def to_array(tensor: torch.Tensor, float_type: FloatType) -> np.ndarray:
    dtype = torch.float16 if float_type == "f16" and tensor.ndim >= 2 else torch.float32
    return tensor.detach().to(device="cpu", dtype=dtype).contiguous().numpy()


def llama_tensors(model: nn.Module, float_type: FloatType = "f32") -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, array) for every weight of the merged model, q/k permuted, a tied head left out."""
    import gguf

    config = model.config
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = head_is_tied(model)
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        stem, _, suffix = hf_name.rpartition(".")
        gguf_name = name_map.get_name(stem)
        if gguf_name is None:
            raise TunelabError(f"--gguf: no llama.cpp tensor name for {hf_name!r}")
        if stem.endswith("self_attn.q_proj"):
            tensor = permute_qk(tensor, config.num_attention_heads)
        elif stem.endswith("self_attn.k_proj"):
            tensor = permute_qk(tensor, config.num_key_value_heads)
        yield f"{gguf_name}.{suffix}", to_array(tensor, float_type)
