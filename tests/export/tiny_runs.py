"""Tiny run directories built directly (no training loop): a base model folder, adapters injected and
moved off their init, then `save_adapter` + a `config.yaml`, exactly the layout `tunelab run` leaves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from tunelab.adapters import AdapterConfig, inject_adapters, num_heads_of, save_adapter
from tunelab.assets.models import resolve_model
from tunelab.config import RunConfig
from tunelab.models.artifact import TASK_STATE
from tunelab.recipes import config_to_dict

LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
HEAD = [r"(^|\.)classifier(\.|$)"]  # what the runner records for a BERT classifier


def save_base(folder: Path, model: nn.Module, tokenizer: Any) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def perturb_trainable(model: nn.Module, seed: int = 1, scale: float = 0.1) -> None:
    """Move every trainable tensor (A, B, m, head) off its init, so exports are compared on a real adapter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * scale)


def write_config(run_dir: Path, task: str, base: Path | str, adapter: dict[str, Any],
                 label_names: list[str] | None = None) -> None:
    """config.yaml as the runner writes it (the full resolved recipe) and, for a classifier, the
    task_state.json that carries its label names."""
    config = RunConfig.model_validate({"name": "tiny", "task": task, "model": {"name": str(base)},
                                       "data": {"dataset": "tiny"}, "adapter": adapter})
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    if label_names is not None:
        (run_dir / TASK_STATE).write_text(json.dumps({"label_names": label_names}))


def adapter_run(run_dir: Path, model: nn.Module, base_dir: Path, task: str, cfg: AdapterConfig,
                label_names: list[str] | None = None) -> Path:
    """`model` must hold the weights saved in `base_dir` (the base the adapter is fingerprinted against)."""
    inject_adapters(model, cfg, num_heads_of(model), enforce_budget=False)
    perturb_trainable(model)
    base = {"name": str(base_dir), "revision": None, "fingerprint": resolve_model(str(base_dir)).fingerprint}
    save_adapter(model, cfg, base, run_dir / "artifact")
    write_config(run_dir, task, base_dir, cfg.model_dump(mode="json"), label_names)
    return run_dir


def full_run(run_dir: Path, model: nn.Module, tokenizer: Any, base_dir: Path, task: str,
             label_names: list[str] | None = None) -> Path:
    """A full fine-tune: every weight moved, the whole model saved in artifact/ (adapter.variant none)."""
    perturb_trainable(model, scale=0.05)
    save_base(run_dir / "artifact", model, tokenizer)
    write_config(run_dir, task, base_dir, {"variant": "none"}, label_names)
    return run_dir


def lm_base(folder: Path, model: nn.Module, tokenizer: Any) -> tuple[Path, nn.Module]:
    """Save a causal LM as a local base model and hand back the copy transformers loads from it."""
    from transformers import AutoModelForCausalLM

    save_base(folder, model, tokenizer)
    return folder, AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def sft_run(tmp: Path, variant: str, model: nn.Module | None = None, tokenizer: Any = None,
            targets: list[str] | None = None) -> Path:
    """An SFT run on a tiny Llama (the word-level test tokenizer unless one is given)."""
    from tests.eval.tiny_lm import tiny_llama, tiny_tokenizer

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    base_dir, base = lm_base(tmp / "base", model if model is not None else tiny_llama(), tokenizer)
    if variant == "none":
        return full_run(tmp / "run", base, tokenizer, base_dir, "sft")
    cfg = AdapterConfig(variant=variant, rank=4, alpha=8, targets=targets or LLAMA_TARGETS)
    return adapter_run(tmp / "run", base, base_dir, "sft", cfg)


def classification_run(tmp: Path, variant: str, num_labels: int = 3) -> Path:
    """A classification run on a tiny BERT encoder (saved without a head, as MiniLM ships)."""
    from transformers import BertForSequenceClassification, BertModel

    from tests.adapters.tiny import TINY_BERT
    from tests.eval.tiny_lm import tiny_tokenizer

    torch.manual_seed(0)
    base_dir = save_base(tmp / "base", BertModel(TINY_BERT).eval(), tiny_tokenizer())
    names = [f"class_{i}" for i in range(num_labels)]
    model = BertForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels).eval()
    if variant == "none":
        return full_run(tmp / "run", model, tiny_tokenizer(), base_dir, "classification", names)
    cfg = AdapterConfig(variant=variant, rank=4, alpha=8, targets=["query", "value"], trainable_extra=HEAD)
    return adapter_run(tmp / "run", model, base_dir, "classification", cfg, names)


def build_run(tmp: Path, task: str, variant: str) -> Path:
    return sft_run(tmp, variant) if task == "sft" else classification_run(tmp, variant)


# token ids inside the tiny word vocabulary (63 words), two rows of six
IDS = torch.tensor([[1, 10, 12, 15, 30, 7], [1, 44, 8, 9, 21, 50]])
