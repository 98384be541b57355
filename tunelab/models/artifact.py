"""A run's trained model on disk, and the one function that loads it back (eval, predict, export).

`run/artifact/` holds, by how the run trained:
- adapters on a pretrained base: the tunelab adapter format (tunelab.adapters.artifact: adapter weights
  + trainable head, the base named and fingerprinted; the base itself is not copied);
- a full fine-tune of a pretrained model: `save_pretrained` of model and tokenizer (loads in plain
  transformers);
- a from-scratch architecture: `model.safetensors` + `tunelab_model.json` (the model.arch settings and
  the tokenizer built from the data).
`run/task_state.json` holds what the task needs to rebuild its model without the data (e.g. the
classifier's label names). `load_run_model` reads all three kinds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.adapters.spec import AdapterConfig
from tunelab.config import RunConfig
from tunelab.errors import TunelabError
from tunelab.models.source import ModelSource, ScratchSource, model_source_for
from tunelab.rundir import atomic_write_dir, atomic_write_json

SCRATCH_CONFIG = "tunelab_model.json"
SCRATCH_WEIGHTS = "model.safetensors"
TASK_STATE = "task_state.json"


@dataclass
class LoadedRun:
    model: nn.Module
    tokenizer: Any
    config: RunConfig
    task: Any


def save_run_artifact(model: nn.Module, task: Any, source: ModelSource, applied: AdapterConfig,
                      run_dir: Path) -> Path:
    """Write task_state.json, then artifact/ atomically (a kill leaves no half-written artifact)."""
    atomic_write_json(run_dir / TASK_STATE, task.artifact_state())
    out_dir = run_dir / "artifact"
    if isinstance(source, ScratchSource):
        meta = {"format": "tunelab-model", "version": 1, "arch": source.arch,
                "tokenizer": source.tokenizer.to_dict() if source.tokenizer is not None else None}
        state = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}

        def write_scratch(tmp: Path) -> None:
            save_file(state, str(tmp / SCRATCH_WEIGHTS), metadata={"format": "pt"})
            atomic_write_json(tmp / SCRATCH_CONFIG, meta)

        return atomic_write_dir(out_dir, write_scratch)
    if applied.variant == "none":
        def write_full(tmp: Path) -> None:
            model.save_pretrained(str(tmp), safe_serialization=True)
            source.tokenizer.save_pretrained(str(tmp))

        return atomic_write_dir(out_dir, write_full)
    from tunelab.adapters.artifact import save_adapter

    return save_adapter(model, applied, source.base, out_dir)


def load_run_model(run_dir: Path | str) -> LoadedRun:
    """The trained model of a finished run, in eval mode, exactly as it ended training."""
    from tunelab.recipes import load_recipe
    from tunelab.tasks.registry import task_class

    run_dir = Path(run_dir)
    artifact = run_dir / "artifact"
    if not (run_dir / "config.yaml").is_file() or not artifact.is_dir():
        raise TunelabError(f"{run_dir}: not a finished tunelab run (config.yaml and artifact/ expected)")
    config = load_recipe(str(run_dir / "config.yaml"), [])
    task = task_class(config.task)(config)
    state_path = run_dir / TASK_STATE
    task.load_artifact_state(json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {})
    if (artifact / SCRATCH_CONFIG).is_file():
        model, tokenizer = _load_scratch(task, artifact)
    elif (artifact / "config.json").is_file():  # full fine-tune
        source = model_source_for(config.model.model_copy(update={"name": str(artifact), "revision": None}))
        model, tokenizer = task.build_model(source), source.tokenizer
    else:
        from tunelab.adapters.artifact import load_adapter

        source = model_source_for(config.model)
        model = task.build_model(source)
        load_adapter(model, artifact, source.fingerprint)
        tokenizer = source.tokenizer
    if getattr(getattr(model, "config", None), "use_cache", None) is False:
        model.config.use_cache = True  # training turns the KV cache off; a reloaded model is for inference
    model.eval()
    return LoadedRun(model, tokenizer, config, task)


def _load_scratch(task: Any, artifact: Path) -> tuple[nn.Module, Any]:
    from tunelab.data.char_tokenizer import CharTokenizer

    meta = json.loads((artifact / SCRATCH_CONFIG).read_text(encoding="utf-8"))
    tokenizer = CharTokenizer.from_dict(meta["tokenizer"]) if meta.get("tokenizer") else None
    model = task.build_model(ScratchSource(meta["arch"], tokenizer=tokenizer))
    missing, unexpected = model.load_state_dict(load_file(str(artifact / SCRATCH_WEIGHTS)), strict=False)
    if missing or unexpected:
        raise TunelabError(f"{artifact}: weights do not fit model.arch (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
    return model, tokenizer


__all__ = ["LoadedRun", "load_run_model", "save_run_artifact"]
