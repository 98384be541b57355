"""Training checkpoints that make `--resume` give the same result as an uninterrupted run.

A checkpoint holds what changes during training and nothing else: trainable weights and buffers
(BatchNorm running statistics; safetensors), optimizer/scheduler/scaler state and the torch/CUDA RNG
states (torch.save, read back with weights_only=True), the Python, numpy and task generator states
(JSON), and the loop position (JSON). Folders are written beside the target and
swapped in, so a kill mid-write leaves the previous checkpoint intact; a full disk or read-only folder does
too, and stops the run with one line (see `tunelab.write_errors`).
"""

from __future__ import annotations

import io
import json
import pickle
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.errors import TunelabError
from tunelab.models.params import buffer_state, trainable_state
from tunelab.rundir import atomic_write_dir

if TYPE_CHECKING:
    from tunelab.train.distributed import Snapshot

#: place(saved whole tensor, this process's tensor) -> the value to copy in (FSDP: this rank's shard)
Place = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], place: Place | None = None) -> None:
    """Copy saved parameters and buffers into the model in place (names must exist in the model)."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    missing = [name for name in state if name not in tensors]
    if missing:
        raise TunelabError(f"checkpoint does not fit this model: unknown tensor '{missing[0]}'")
    with torch.no_grad():
        for name, value in state.items():
            target = tensors[name]
            value = value.to(target.device, target.dtype)
            target.copy_(place(value, target) if place else value)


def numpy_state(generators: dict[str, np.random.Generator]) -> dict[str, Any]:
    """Python's, numpy's legacy global and every task generator's state, as JSON-ready values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy_global": [kind, keys.tolist(), pos, has_gauss, cached],
            "generators": {name: g.bit_generator.state for name, g in generators.items()}}


def restore_numpy_state(state: dict[str, Any], generators: dict[str, np.random.Generator]) -> None:
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy_global"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    for name, generator in generators.items():
        if name not in state["generators"]:
            raise TunelabError(f"--resume: the checkpoint holds no state for the task's '{name}' generator")
        generator.bit_generator.state = state["generators"][name]


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {**trainable_state(model), **buffer_state(model)}


def save_checkpoint(folder: Path, model: nn.Module, optimizer, scheduler, scaler, position: dict[str, Any],
                    generators: dict[str, np.random.Generator] | None = None,
                    snapshot: Snapshot | None = None) -> None:
    """`snapshot`: under torchrun, every rank's RNG states (ranks.json; rank 0's are also the main files)
    and, under FSDP, the weights and optimizer state gathered whole (the files a one-process run writes)."""
    def write(tmp: Path) -> None:
        if snapshot is not None:
            (tmp / "ranks.json").write_text(json.dumps(snapshot.rank_states), encoding="utf-8")
        tensors = snapshot.tensors if snapshot is not None and snapshot.tensors is not None else model_state(model)
        save_file(tensors, str(tmp / "trainable.safetensors"))
        state = io.BytesIO()  # to memory first: torch's file writer drops the errno of a full disk
        torch.save({
            "optimizer": snapshot.optimizer if snapshot is not None and snapshot.optimizer is not None
            else optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }, state)
        (tmp / "state.pt").write_bytes(state.getbuffer())
        (tmp / "rng.json").write_text(json.dumps(numpy_state(generators or {})), encoding="utf-8")
        (tmp / "position.json").write_text(json.dumps(position, indent=2), encoding="utf-8")

    atomic_write_dir(Path(folder), write)


def load_checkpoint(folder: Path, model: nn.Module, optimizer, scheduler, scaler,
                    generators: dict[str, np.random.Generator] | None = None,
                    place: Place | None = None) -> dict[str, Any]:
    """`place` lays each saved whole tensor out like the process's own (FSDP: its shard)."""
    folder = Path(folder)
    if not (folder / "position.json").is_file():
        raise TunelabError(f"--resume: no complete checkpoint in {folder}")
    load_trainable_state(model, read_weights(folder / "trainable.safetensors"), place)
    try:  # weights_only: a state.pt that asks to run code (a crafted pickle) is refused, not executed
        state = torch.load(folder / "state.pt", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TunelabError(f"--resume: {folder / 'state.pt'} is not a checkpoint tunelab can read safely "
                           f"({reason[:160]})") from None
    optimizer.load_state_dict(placed_optimizer_state(state["optimizer"], optimizer, place) if place
                              else state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    restore_numpy_state(json.loads((folder / "rng.json").read_text(encoding="utf-8")), generators or {})
    return json.loads((folder / "position.json").read_text(encoding="utf-8"))


def placed_optimizer_state(state: dict[str, Any], optimizer, place: Place) -> dict[str, Any]:
    """A saved optimizer state (whole tensors, keyed by parameter position) with every per-parameter
    tensor laid out like its parameter; scalars such as Adam's step count stay as they are."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    placed = {index: {key: place(value, params[index]) if isinstance(value, torch.Tensor) and value.dim() else value
                      for key, value in entry.items()} for index, entry in state["state"].items()}
    return {**state, "state": placed}


def load_rank_states(folder: Path) -> list[dict[str, Any]] | None:
    """Every rank's RNG states from a data-parallel checkpoint; None for a one-process checkpoint."""
    path = Path(folder) / "ranks.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def save_best(folder: Path, state: dict[str, torch.Tensor]) -> None:
    """The best step's trainable weights and buffers (`model_state`), swapped in whole."""
    atomic_write_dir(Path(folder), lambda tmp: save_file(state, str(tmp / "trainable.safetensors")))


def load_best(folder: Path, model: nn.Module) -> None:
    load_trainable_state(model, read_weights(Path(folder) / "trainable.safetensors"))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or one line saying it is missing or damaged (not a traceback mid-resume)."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise TunelabError(f"--resume: {path} is missing or damaged ({error}); restart the run, or resume from "
                           "a copy of the run folder with an intact checkpoint") from None
