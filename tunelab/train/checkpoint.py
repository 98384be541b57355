"""Training checkpoints that make `--resume` give the same result as an uninterrupted run.

A checkpoint holds what changes during training and nothing else: trainable weights
(safetensors), optimizer/scheduler/scaler state and RNG states (torch.save, read back with
weights_only=True), and the loop position (JSON). Folders are written beside the target and
swapped in, so a kill mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.errors import TunelabError
from tunelab.models.params import trainable_state
from tunelab.rundir import atomic_write_dir


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [name for name in state if name not in params]
    if missing:
        raise TunelabError(f"checkpoint does not fit this model: unknown parameter '{missing[0]}'")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def save_checkpoint(folder: Path, model: nn.Module, optimizer, scheduler, scaler, position: dict[str, Any]) -> None:
    def write(tmp: Path) -> None:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save({
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }, tmp / "state.pt")
        (tmp / "position.json").write_text(json.dumps(position, indent=2), encoding="utf-8")

    atomic_write_dir(Path(folder), write)


def load_checkpoint(folder: Path, model: nn.Module, optimizer, scheduler, scaler) -> dict[str, Any]:
    folder = Path(folder)
    if not (folder / "position.json").is_file():
        raise TunelabError(f"--resume: no complete checkpoint in {folder}")
    load_trainable_state(model, load_file(str(folder / "trainable.safetensors")))
    state = torch.load(folder / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(_as_tuple(state["python_rng"]))
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return json.loads((folder / "position.json").read_text(encoding="utf-8"))


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def save_best(folder: Path, model: nn.Module) -> None:
    atomic_write_dir(Path(folder), lambda tmp: save_file(trainable_state(model), str(tmp / "trainable.safetensors")))


def load_best(folder: Path, model: nn.Module) -> None:
    load_trainable_state(model, load_file(str(Path(folder) / "trainable.safetensors")))
