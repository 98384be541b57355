"""Sequence packing for causal LMs: several short examples share one row of max_length tokens.

Isolation: position ids restart at 0 for each example and no 2-D attention mask is passed, so
transformers builds a block-diagonal causal mask from the position ids (`find_packed_sequence_indices`):
no token attends to another example. Targets are shifted per example before concatenation, so no
example learns to predict the next example's first token. Padding at the end of a row is its own
block (positions restart) with no targets.
"""

from __future__ import annotations

import numpy as np
import torch

from tunelab.train.lm_loss import IGNORE


def pack_examples(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """First-fit decreasing: example indices per packed row, every row at most `capacity` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in np.argsort(-lengths, kind="stable"):
        size = int(lengths[index])
        slot = next((r for r, free in enumerate(room) if free >= size), None)
        if slot is None:
            rows.append([int(index)])
            room.append(capacity - size)
        else:
            rows[slot].append(int(index))
            room[slot] -= size
    return rows


def collate_packed(rows: list[list[int]], ids: list[np.ndarray], targets: list[np.ndarray], pad_id: int,
                   ) -> dict[str, torch.Tensor]:
    """(B, T) input_ids, targets and restarting position_ids for a batch of packed rows."""
    width = max(sum(len(ids[i]) for i in row) for row in rows)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    target = np.full((len(rows), width), IGNORE, dtype=np.int64)
    positions = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        cursor = 0
        for i in row:
            n = len(ids[i])
            input_ids[r, cursor:cursor + n] = ids[i]
            target[r, cursor:cursor + n] = targets[i]
            positions[r, cursor:cursor + n] = np.arange(n)
            cursor += n
        positions[r, cursor:] = np.arange(width - cursor)  # padding: a block of its own
    return {"input_ids": torch.from_numpy(input_ids), "targets": torch.from_numpy(target),
            "position_ids": torch.from_numpy(positions)}


def collate_padded(index: np.ndarray, ids: list[np.ndarray], targets: list[np.ndarray], pad_id: int,
                   ) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) batch with a 2-D attention mask (no packing)."""
    width = max(len(ids[i]) for i in index)
    input_ids = np.full((len(index), width), pad_id, dtype=np.int64)
    target = np.full((len(index), width), IGNORE, dtype=np.int64)
    mask = np.zeros((len(index), width), dtype=np.int64)
    for r, i in enumerate(index):
        n = len(ids[i])
        input_ids[r, :n], target[r, :n], mask[r, :n] = ids[i], targets[i], 1
    return {"input_ids": torch.from_numpy(input_ids), "targets": torch.from_numpy(target),
            "attention_mask": torch.from_numpy(mask)}
