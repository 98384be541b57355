import numpy as np

from tunelab.train.batching import bucketed_batches, pad_batch, padding_fraction


def test_bucketed_batches_cover_every_example_once_and_are_deterministic():
    lengths = np.random.default_rng(0).integers(5, 128, size=1000)
    batches = bucketed_batches(lengths, 32, pool=8, seed=7)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    again = bucketed_batches(lengths, 32, pool=8, seed=7)
    assert all((a == b).all() for a, b in zip(batches, again, strict=True))
    other = bucketed_batches(lengths, 32, pool=8, seed=8)
    assert any(not np.array_equal(a, b) for a, b in zip(batches, other, strict=False))


def test_bucketing_cuts_padding_but_keeps_randomness():
    lengths = np.random.default_rng(0).integers(5, 128, size=4000)
    random_batches = bucketed_batches(lengths, 32, pool=1, seed=0)  # pool of one batch = plain shuffling
    pooled = bucketed_batches(lengths, 32, pool=64, seed=0)
    assert padding_fraction(lengths, pooled) < 0.05 < padding_fraction(lengths, random_batches)
    # batches are not in length order: the first ten batches' mean lengths are not sorted
    means = [lengths[b].mean() for b in pooled[:10]]
    assert means != sorted(means)


def test_pad_batch_masks():
    ids, mask = pad_batch([np.array([1, 2, 3]), np.array([4])], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
