"""Adapters on disk: our own format (exact reload, base fingerprint check), PEFT's format, and merging.

Our format, one folder written atomically (temp folder + os.replace):
  adapter_model.safetensors  every trainable parameter under its model name (adapter A/B/m/scale and
                             trainable extras such as the classifier head)
  tunelab_adapter.json       {"format", "version", "config": AdapterConfig dump, "num_heads",
                              "modules": {name: {"variant", "rank"}}, "base": {name, revision, fingerprint}}
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.adapters.inject import adapter_modules, inject_adapters
from tunelab.adapters.spec import AdapterConfig
from tunelab.errors import TunelabError
from tunelab.models.params import trainable_state
from tunelab.rundir import atomic_write_dir, atomic_write_json

CONFIG_FILE = "tunelab_adapter.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT_VERSION = 1


def module_summary(model: nn.Module) -> dict[str, dict[str, Any]]:
    return {name: {"variant": mod.variant, "rank": mod.r} for name, mod in adapter_modules(model).items()}


def save_adapter(model: nn.Module, cfg: AdapterConfig, base: dict[str, Any], out_dir: Path | str) -> Path:
    """Write the trainable weights and `tunelab_adapter.json`; `base` = {name, revision, fingerprint}."""
    if "fingerprint" not in base:
        raise TunelabError("save_adapter: base needs a 'fingerprint' (with 'name' and 'revision')")
    heads = {mod.settings.num_heads for mod in adapter_modules(model).values()}
    meta = {"format": "tunelab-adapter", "version": FORMAT_VERSION, "config": cfg.model_dump(mode="json"),
            "num_heads": heads.pop() if len(heads) == 1 else None, "modules": module_summary(model),
            "base": {"name": base.get("name"), "revision": base.get("revision"),
                     "fingerprint": base["fingerprint"]}}
    state = trainable_state(model)

    def write(tmp: Path) -> None:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        atomic_write_json(tmp / CONFIG_FILE, meta)

    return atomic_write_dir(Path(out_dir), write)


def read_adapter_meta(out_dir: Path) -> dict[str, Any]:
    path = out_dir / CONFIG_FILE
    if not path.exists():
        raise TunelabError(f"no tunelab adapter in {out_dir}: {CONFIG_FILE} is missing")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != "tunelab-adapter" or meta.get("version") != FORMAT_VERSION:
        raise TunelabError(f"{path}: not a tunelab adapter of format version {FORMAT_VERSION}")
    return meta


def load_adapter(model: nn.Module, out_dir: Path | str, base_fingerprint: str) -> AdapterConfig:
    """Inject adapters as saved and load the weights strictly (same names, same shapes, nothing missing).

    Refuses an adapter trained on another base (fingerprint mismatch) before touching the model.
    """
    out_dir = Path(out_dir)
    meta = read_adapter_meta(out_dir)
    base = meta["base"]
    if base["fingerprint"] != base_fingerprint:
        raise TunelabError(f"adapter in {out_dir} was trained on base {base['name']!r} "
                           f"(fingerprint {base['fingerprint']}), not {base_fingerprint!r}")
    cfg = AdapterConfig.model_validate(meta["config"])
    inject_adapters(model, cfg, num_heads=meta["num_heads"], enforce_budget=False)
    if module_summary(model) != meta["modules"]:
        raise TunelabError(f"adapter in {out_dir} does not fit {type(model).__name__}: "
                           "its config adapts different layers or ranks here than when saved")
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    device = next(iter(params.values())).device if params else "cpu"
    state = load_file(str(out_dir / WEIGHTS_FILE), device=str(device))
    missing, unexpected = sorted(params.keys() - state.keys()), sorted(state.keys() - params.keys())
    if missing or unexpected:
        raise TunelabError(f"adapter in {out_dir} does not match the model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    with torch.no_grad():
        for name, tensor in state.items():
            if tensor.shape != params[name].shape:
                raise TunelabError(f"adapter in {out_dir}: {name} has shape {tuple(tensor.shape)}, "
                                   f"the model expects {tuple(params[name].shape)}")
            params[name].copy_(tensor)
    return cfg


def merge_adapters(model: nn.Module) -> list[str]:
    """Replace every adapter by a plain nn.Linear holding the merged weight (lora, dora only)."""
    adapters = adapter_modules(model)
    for mod in adapters.values():
        if not mod.mergeable:
            mod.merge()  # raises the variant's one-line explanation before anything is replaced
    for name, mod in adapters.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, mod.merge())
    return list(adapters)


def extra_modules(model: nn.Module, adapter_names: set[str]) -> list[str]:
    """Modules whose parameters are all trainable and not adapters: PEFT's `modules_to_save`."""
    extra_params = [name for name, p in model.named_parameters()
                    if p.requires_grad and name.rpartition(".")[0] not in adapter_names]
    modules = sorted({name.rpartition(".")[0] for name in extra_params})
    for module_name in modules:
        module = model.get_submodule(module_name)
        if module_name.rpartition(".")[0] in adapter_names or not all(
                p.requires_grad for p in module.parameters()):
            raise TunelabError(f"export_peft: {module_name} is only partly trainable; PEFT can only save "
                               "whole modules (modules_to_save)")
    return modules


def export_peft(model: nn.Module, out_dir: Path | str, base_name: str) -> Path:
    """Write PEFT's LoRA format (adapter_config.json + adapter_model.safetensors) for lora or dora models,
    so `peft.PeftModel.from_pretrained(base, out_dir)` gives the same outputs."""
    from peft import LoraConfig  # only this function needs PEFT

    adapters = adapter_modules(model)
    variants = {mod.variant for mod in adapters.values()}
    dropouts = {mod.settings.dropout for mod in adapters.values()}
    if len(variants) != 1 or not variants <= {"lora", "dora"}:
        raise TunelabError(f"export_peft needs adapters of one variant, lora or dora; found {sorted(variants)}")
    if len(dropouts) != 1:
        raise TunelabError("export_peft: PEFT has one lora_dropout per adapter; layers here differ")
    ranks = {name: mod.r for name, mod in adapters.items()}
    alphas = {name: mod.settings.alpha for name, mod in adapters.items()}
    r, alpha = Counter(ranks.values()).most_common(1)[0][0], Counter(alphas.values()).most_common(1)[0][0]
    modules_to_save = extra_modules(model, set(adapters))
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropouts.pop(), target_modules=sorted(adapters),
        use_dora=variants == {"dora"}, modules_to_save=modules_to_save or None, bias="none",
        rank_pattern={re.escape(n): v for n, v in ranks.items() if v != r},
        alpha_pattern={re.escape(n): v for n, v in alphas.items() if v != alpha},
        base_model_name_or_path=base_name)
    state: dict[str, torch.Tensor] = {}
    for name, mod in adapters.items():
        state[f"base_model.model.{name}.lora_A.weight"] = mod.A.detach().contiguous()
        state[f"base_model.model.{name}.lora_B.weight"] = mod.B.detach().contiguous()
        if mod.variant == "dora":
            state[f"base_model.model.{name}.lora_magnitude_vector"] = mod.m.detach().contiguous()
    for module_name in modules_to_save:
        for pname, p in model.get_submodule(module_name).named_parameters():
            state[f"base_model.model.{module_name}.{pname}"] = p.detach().contiguous()

    def write(tmp: Path) -> None:
        config.save_pretrained(str(tmp))
        save_file(state, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})

    return atomic_write_dir(Path(out_dir), write)
