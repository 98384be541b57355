"""`--model` specs for `tunelab eval`: which weights to load, and under which label to report them.

A spec is one of
- `NAME`: a packaged alias (`smollm2-135m`), a local model directory or a hub id;
- `NAME+ADAPTER_DIR`: that base plus a saved tunelab adapter (`tunelab_adapter.json` +
  `adapter_model.safetensors`), refused when the base's fingerprint differs from the one it was trained on;
- `RUN_DIR`: a tunelab run directory (`config.yaml` + `artifact/`): its `model.name` plus the adapter in
  `artifact/`, or the full fine-tuned model when `artifact/` holds a `config.json` (variant `none`);
each optionally prefixed `LABEL=` (`base=smollm2-135m`, `sft=runs/sft/2025...`). Labels default to the
spec's most telling part and must be unique: they name the columns of every table.

Every spec is parsed and resolved before any model runs, so a typo in the third spec fails in seconds
instead of after two models have been evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunelab.assets.models import MODEL_ALIASES, ResolvedModel, load_tokenizer, resolve_model
from tunelab.errors import TunelabError

LABEL_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class ModelSpec:
    label: str
    spec: str  # as the user wrote it, without the label
    base: str  # what resolve_model receives
    revision: str | None = None
    adapter_dir: Path | None = None
    run_dir: Path | None = None


def parse_spec(text: str) -> ModelSpec:
    """One spec string (see the module docstring) → ModelSpec; checks that named directories exist."""
    label, sep, body = text.partition("=")
    if not sep or not LABEL_RE.match(label) or "/" in label:
        label, body = "", text
    body = body.strip()
    if not body:
        raise TunelabError(f"model spec {text!r} is empty")
    path = Path(body).expanduser()
    if path.is_dir() and (path / "config.yaml").is_file() and (path / "artifact").is_dir():
        return _run_dir_spec(label or path.name, body, path)
    if "+" in body:
        name, adapter = (part.strip() for part in body.split("+", 1))
        adapter_dir = Path(adapter).expanduser()
        if not adapter_dir.is_dir():
            raise TunelabError(f"model spec {text!r}: adapter directory '{adapter}' does not exist")
        return ModelSpec(label or f"{name}+{adapter_dir.name}", body, name, adapter_dir=adapter_dir)
    return ModelSpec(label or body, body, body)


def _run_dir_spec(label: str, body: str, run_dir: Path) -> ModelSpec:
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise TunelabError(f"model spec {body!r}: {run_dir / 'config.yaml'} is not valid YAML") from error
    artifact = run_dir / "artifact"
    if (artifact / "config.json").is_file():  # a full fine-tune saves the whole model
        return ModelSpec(label, body, str(artifact), run_dir=run_dir)
    model = config.get("model") if isinstance(config, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    if not name:
        raise TunelabError(f"model spec {body!r}: {run_dir / 'config.yaml'} has no model.name")
    return ModelSpec(label, body, str(name), revision=model.get("revision"), adapter_dir=artifact, run_dir=run_dir)


def parse_specs(texts: list[str]) -> list[ModelSpec]:
    """All specs, with unique labels (a repeated label is an error: it would merge two table columns)."""
    if not texts:
        raise TunelabError("give at least one --model")
    specs = [parse_spec(text) for text in texts]
    seen: set[str] = set()
    for spec in specs:
        if spec.label in seen:
            raise TunelabError(f"model label {spec.label!r} is used twice; name them with LABEL=SPEC")
        seen.add(spec.label)
    return specs


def resolve_spec(spec: ModelSpec) -> ResolvedModel:
    """The spec's base model folder; a packaged encoder alias is refused here, before anything loads."""
    alias = MODEL_ALIASES.get(spec.base)
    if alias is not None and alias.kind != "causal_lm":
        raise TunelabError(f"model spec {spec.spec!r}: '{alias.name}' is an {alias.kind}, not a causal LM; "
                           "tunelab eval needs a model that generates text")
    try:
        return resolve_model(spec.base, spec.revision)
    except TunelabError as error:
        raise TunelabError(f"model spec {spec.spec!r}: {error}") from error


def pick_device_dtype() -> tuple[Any, Any]:
    """CUDA in bf16 when available (fp16 on GPUs without bf16), else CPU in fp32 (CPU half is slow)."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.device("cpu"), torch.float32


def load_spec(spec: ModelSpec, resolved: ResolvedModel, device: Any, dtype: Any) -> tuple[Any, Any]:
    """(model in eval mode on `device`, tokenizer) with the spec's adapter loaded; a run directory is
    loaded by `load_run_model`, the one loader of run artifacts."""
    from transformers import AutoModelForCausalLM

    if spec.run_dir is not None:
        from tunelab.models.artifact import load_run_model

        loaded = load_run_model(spec.run_dir)
        if not getattr(loaded.model, "can_generate", lambda: False)():
            raise TunelabError(f"model spec {spec.spec!r}: run {spec.run_dir} trained a "
                               f"{loaded.config.task} model, not a causal LM that generates text")
        return loaded.model.to(device=device, dtype=dtype).eval(), loaded.tokenizer

    try:
        model, info = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=dtype, output_loading_info=True,
                                                           trust_remote_code=False)  # never a model's own code
    except (OSError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TunelabError(f"model spec {spec.spec!r}: cannot load a causal LM from {resolved.path}: {first}") \
            from error
    if info.get("missing_keys"):  # e.g. an encoder checkpoint given a freshly initialised LM head
        missing = sorted(info["missing_keys"])
        raise TunelabError(f"model spec {spec.spec!r}: {resolved.path} is not a complete causal LM checkpoint "
                           f"({len(missing)} weights missing, e.g. {missing[0]})")
    if spec.adapter_dir is not None:
        from tunelab.adapters.artifact import load_adapter

        load_adapter(model, spec.adapter_dir, resolved.fingerprint)
    return model.to(device=device, dtype=dtype).eval(), load_tokenizer(resolved)
