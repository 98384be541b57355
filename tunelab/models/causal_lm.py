"""Load a causal LM for training: fp32 master weights, optional bitsandbytes quantisation (QLoRA),
gradient checkpointing, and no KV cache during training."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM

from tunelab.config import ModelConfig
from tunelab.errors import TunelabError


def quantization_config(quantize: str):
    """bitsandbytes 4/8-bit config; only where its CUDA backend exists."""
    if quantize == "none":
        return None
    if not torch.cuda.is_available():
        raise TunelabError(f"model.quantize={quantize} needs a CUDA GPU (bitsandbytes); on CPU use model.quantize=none")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TunelabError(f"model.quantize={quantize} needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def load_causal_lm(model_path: Path, cfg: ModelConfig, gradient_checkpointing: bool = False) -> nn.Module:
    quant = quantization_config(cfg.quantize)
    kwargs = {"quantization_config": quant, "device_map": {"": 0}} if quant else {"dtype": torch.float32}
    model = AutoModelForCausalLM.from_pretrained(str(model_path), **kwargs)
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model
