"""Load a causal LM for training: fp32 master weights, optional bitsandbytes quantisation (QLoRA),
gradient checkpointing, and no KV cache during training.

QLoRA (`model.quantize: 4bit|8bit`): every nn.Linear of the decoder is stored quantised (bitsandbytes
Linear4bit NF4 with double quantisation, or Linear8bitLt LLM.int8); embeddings, norms and the LM head
stay float32. The model is placed by a device map at load time (CUDA device 0, or the CPU), so it must
not be moved afterwards. Adapters on these layers keep float32 parameters (`adapters/lowrank.py`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM

from tunelab.config import ModelConfig
from tunelab.errors import TunelabError
from tunelab.models.remote_code import from_pretrained
from tunelab.train.precision import default_device


def quantization_config(quantize: str, device: torch.device | None = None) -> Any:
    """bitsandbytes 4/8-bit config, or None for `none`.

    4-bit compute dtype (what Linear4bit dequantises W into and multiplies in): bf16 on CUDA, as QLoRA;
    float32 on the CPU, where bitsandbytes dequantises with plain torch ops and bf16 matmuls are not
    faster without AVX512-BF16.
    """
    if quantize == "none":
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TunelabError(f"model.quantize={quantize} needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    device = device or default_device()
    if quantize == "4bit":
        compute = torch.bfloat16 if device.type == "cuda" else torch.float32
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute)
    return BitsAndBytesConfig(load_in_8bit=True)


def device_map(device: torch.device) -> dict[str, int | str]:
    """The whole model on one device ({"": 0} or {"": "cpu"}): quantisation happens as weights land there."""
    return {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}


def release_checkpoint_file(model: nn.Module) -> None:
    """Copy the float parameters still backed by the memory-mapped checkpoint into ordinary memory.

    On the CPU, from_pretrained leaves unquantised tensors (embeddings, norms, head) as views into the
    mmapped safetensors file; that keeps the whole file mapped, and every page quantisation read stays
    resident (SmolLM2-135M 4-bit: 520 MB of file pages for 160 MB of live tensors). Copying the few float
    tensors lets the mapping go. Only for quantised loads: an fp32 model's parameters *are* those pages.
    """
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.device.type == "cpu" and tensor.dtype.is_floating_point:
                tensor.data = tensor.data.clone()


def load_causal_lm(model_path: Path, cfg: ModelConfig, gradient_checkpointing: bool = False) -> nn.Module:
    device = default_device()
    quant = quantization_config(cfg.quantize, device)
    placement = {"quantization_config": quant, "device_map": device_map(device)} if quant else {}
    model = from_pretrained(AutoModelForCausalLM, model_path, cfg.trust_remote_code, dtype=torch.float32,
                            **placement)
    if quant:
        release_checkpoint_file(model)
    if cfg.quantize == "8bit":  # LLM.int8 casts fp32 inputs to fp16 in every matmul and logs that every call
        logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model
