"""Frozen-prefix cache: when only the top layers train, run the frozen bottom once and reuse it.

If the first layer holding a trainable parameter is layer k (k = all layers for head-only training),
the embeddings and layers 0..k-1 compute the same function every epoch. We run them once over the
training set (eval mode, under the training autocast), keep each example's hidden states at its own
length, and during training swap in a stand-in embeddings module that returns the cached states
while the encoder runs only layers k..L-1. Cost: memory for sum(lengths) x hidden floats (capped).

The eval split is cached the same way (evaluation runs in eval mode, as the cache does), so every
periodic and final evaluation also runs only layers k..L-1, with the same predictions.

Shared across the variants of a recipe: runs on the same base weights, data and precision compute the
same prefix states, so the last cache is kept in memory under a key of those and reused when the next
run freezes the same k layers (a four-variant comparison pays for the prefix once, not four times).

Difference from the uncached run, by design: the frozen layers run without dropout (as a frozen
feature extractor would). With dropout off, the loss is the same as without the cache (tested).
Works for models whose embeddings module is named `embeddings` or `embed_tokens` and whose blocks sit
in one nn.ModuleList of config.num_hidden_layers entries (BERT, RoBERTa, DistilBERT, Llama-style).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tunelab.progress import progress_bar

EMBEDDING_NAMES = ("embeddings", "embed_tokens")
_SHARED: dict[str, tuple[int, dict[str, list[torch.Tensor]]]] = {}  # key -> (k, states by split): the last only


class _StopForward(Exception):
    """Raised by the hook on layer k-1: nothing above it is needed to fill the cache."""


class _CachedEmbeddings(nn.Module):
    """Stands in for the embeddings module: returns the cached layer-k input for the current batch."""

    def __init__(self) -> None:
        super().__init__()
        self.current: torch.Tensor | None = None

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.current


@dataclass
class Backbone:
    embeddings_owner: nn.Module
    embeddings_attr: str
    layers_owner: nn.Module
    layers_attr: str
    layers: nn.ModuleList
    embeddings: nn.Module


def find_backbone(model: nn.Module) -> Backbone | None:
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    modules = dict(model.named_modules())
    layers_name = next((n for n, m in modules.items() if isinstance(m, nn.ModuleList) and len(m) == count), None)
    embed_name = next((n for n in modules if n.rsplit(".", 1)[-1] in EMBEDDING_NAMES), None)
    if layers_name is None or embed_name is None:
        return None
    embed_owner, _, embed_attr = embed_name.rpartition(".")
    layers_owner, _, layers_attr = layers_name.rpartition(".")
    return Backbone(modules[embed_owner], embed_attr, modules[layers_owner], layers_attr,
                    modules[layers_name], modules[embed_name])


def first_trainable_layer(backbone: Backbone) -> int:
    """Index of the lowest block with a trainable parameter (len(layers) if none; 0 if embeddings train)."""
    if any(p.requires_grad for p in backbone.embeddings.parameters()):
        return 0
    for index, layer in enumerate(backbone.layers):
        if any(p.requires_grad for p in layer.parameters()):
            return index
    return len(backbone.layers)


class FrozenPrefixCache:
    """Layer-k inputs per example, by split ("train", and "eval" when the task's eval split is cached too)."""

    def __init__(self, backbone: Backbone, k: int, states: dict[str, list[torch.Tensor]]):
        self.backbone, self.k, self.states = backbone, k, states
        self.stand_in = _CachedEmbeddings()
        self.top_layers = nn.ModuleList(list(backbone.layers)[k:])

    @property
    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for split in self.states.values() for s in split)

    def eval_prefix(self, device: torch.device) -> Callable[[np.ndarray], Any] | None:
        """`prefix(index)` for Task.evaluate: eval examples start at layer k too (None: eval not cached)."""
        if "eval" not in self.states:
            return None
        return lambda index: self.active(index, device, split="eval")

    @contextmanager
    def active(self, index: np.ndarray, device: torch.device, split: str = "train") -> Iterator[None]:
        """Within this block the model's forward starts at layer k from the cached states."""
        rows = [self.states[split][i] for i in index]
        longest = max(r.shape[0] for r in rows)
        batch = rows[0].new_zeros((len(rows), longest, rows[0].shape[-1]))  # (B, T, H), zeros at padding
        for row, state in enumerate(rows):
            batch[row, : state.shape[0]] = state
        self.stand_in.current = batch.to(device)
        b = self.backbone
        setattr(b.embeddings_owner, b.embeddings_attr, self.stand_in)
        setattr(b.layers_owner, b.layers_attr, self.top_layers)
        try:
            yield
        finally:
            setattr(b.embeddings_owner, b.embeddings_attr, b.embeddings)
            setattr(b.layers_owner, b.layers_attr, b.layers)
            self.stand_in.current = None


PrefixInputs = tuple[list[np.ndarray], Callable, np.ndarray]  # (batches, collate, lengths) of one split


def build_prefix_cache(model: nn.Module, batches: list[np.ndarray], collate: Callable, lengths: np.ndarray,
                       autocast: Callable, max_bytes: int, share_key: str | None = None,
                       eval_inputs: PrefixInputs | None = None) -> FrozenPrefixCache | None:
    """Run the frozen prefix once over the training set (and the eval split, when `eval_inputs` are
    given: every evaluation then runs only the top layers too); None when it would not pay or fit.

    `share_key` names (base weights, data, precision): a cache built under the same key and the same k
    is reused instead of recomputed."""
    backbone = find_backbone(model)
    if backbone is None:
        return None
    k = first_trainable_layer(backbone)
    if k == 0:
        return None
    hidden = int(getattr(model.config, "hidden_size", 0) or getattr(model.config, "dim", 0))
    splits = {"train": (batches, collate, lengths)}
    if eval_inputs is not None:
        splits["eval"] = eval_inputs
    if sum(int(split[2].sum()) for split in splits.values()) * hidden * 4 > max_bytes:
        return None
    shared = _SHARED.get(share_key or "")
    if shared is not None and shared[0] == k and set(shared[1]) == set(splits):
        return FrozenPrefixCache(backbone, k, shared[1])
    states = {name: compute_prefix_states(model, backbone, k, *split, autocast, name)
              for name, split in splits.items()}
    _SHARED.clear()
    if share_key:
        _SHARED[share_key] = (k, states)
    return FrozenPrefixCache(backbone, k, states)


def compute_prefix_states(model: nn.Module, backbone: Backbone, k: int, batches: list[np.ndarray], collate: Callable,
                          lengths: np.ndarray, autocast: Callable, split: str = "train") -> list[torch.Tensor]:
    """Each example's input to layer k, (length, H) float32 on CPU; the forward stops right after layer k-1."""
    states: list[torch.Tensor | None] = [None] * len(lengths)
    captured: dict[str, torch.Tensor] = {}

    def hook(module, args, output):
        captured["h"] = output[0] if isinstance(output, tuple) else output
        raise _StopForward

    handle = backbone.layers[k - 1].register_forward_hook(hook)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with progress_bar(f"caching frozen layers 0-{k - 1} ({split})", total=len(lengths)) as bar, torch.no_grad():
            for index in batches:
                batch = {key: value.to(device) for key, value in collate(index).items() if key != "labels"}
                with autocast():
                    try:
                        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                    except _StopForward:
                        pass
                h = captured.pop("h").float().cpu()  # (B, T, H)
                for row, example in enumerate(index):
                    states[example] = h[row, : lengths[example]].clone()
                bar.advance(len(index))
    finally:
        handle.remove()
        model.train(was_training)
    return states  # type: ignore[return-value]
