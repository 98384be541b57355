"""Tokenised examples and length-bucketed batches.

Speed trick (named, with why): padding to the longest text in a random batch wastes ~58% of the
tokens on AG News at max length 128. Sorting *everything* by length removes the waste but also the
randomness (accuracy fell from 0.80 to 0.63 in our measurement). So we shuffle, cut the order into
pools of `pool` batches, sort by length only inside each pool, then shuffle the batches: near-zero
padding, and every batch is still a random draw from a random pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TokenizedSet:
    """Variable-length token ids (no padding stored) plus one target per example."""

    ids: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))

    def subset(self, index: np.ndarray) -> TokenizedSet:
        return TokenizedSet([self.ids[i] for i in index], self.targets[index])


def bucketed_batches(lengths: np.ndarray, batch_size: int, pool: int, seed: int, shuffle: bool = True,
                     drop_last: bool = False) -> list[np.ndarray]:
    """Batches of example indices; deterministic for a given seed (so resume can replay an epoch)."""
    n = len(lengths)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n) if shuffle else np.argsort(lengths, kind="stable")
    batches: list[np.ndarray] = []
    pool_size = batch_size * pool if shuffle else n
    for start in range(0, n, pool_size):
        chunk = order[start:start + pool_size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        for b in range(0, len(chunk), batch_size):
            batch = chunk[b:b + batch_size]
            if drop_last and len(batch) < batch_size:
                continue
            batches.append(batch)
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def pad_batch(sequences, pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence in the batch; returns (input_ids, attention_mask), both (B, T).

    Right padding for training and scoring (positions stay 0..len-1); left padding for batched
    generation, so every row's next token is appended at the same column."""
    longest = max(len(s) for s in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, seq in enumerate(sequences):
        if len(seq) == 0:
            continue
        columns = slice(longest - len(seq), longest) if left else slice(0, len(seq))
        ids[row, columns] = seq
        mask[row, columns] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def padding_fraction(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of tokens in the padded batches that are padding (0 = no waste)."""
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1.0 - real / padded if padded else 0.0
