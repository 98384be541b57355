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


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator that orders epoch `epoch` of a run with `seed`.

    SeedSequence([seed, epoch]) gives independent streams for every (seed, epoch) pair; the obvious
    `seed + epoch` would make seed 0's second epoch identical to seed 1's first, correlating the runs a
    multi-seed comparison treats as independent."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch]))


def bucketed_batches(lengths: np.ndarray, batch_size: int, pool: int, rng: np.random.Generator,
                     drop_last: bool = False) -> list[np.ndarray]:
    """Shuffled batches of example indices, length-sorted within pools of `pool` batches; a pure
    function of the generator's state (so resume can replay an epoch)."""
    n = len(lengths)
    order = rng.permutation(n)
    batches: list[np.ndarray] = []
    pool_size = batch_size * pool
    for start in range(0, n, pool_size):
        chunk = order[start:start + pool_size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)
                       if not drop_last or len(chunk) - b >= batch_size)
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches in length order (least padding), for evaluation and one-off passes over a set."""
    order = np.argsort(lengths, kind="stable")
    return [order[b:b + batch_size] for b in range(0, len(order), batch_size)]


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
