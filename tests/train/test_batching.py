import numpy as np

from tunelab.train.batching import bucketed_batches, epoch_rng, pad_batch, padding_fraction, sorted_batches


def test_bucketed_batches_cover_every_example_once_and_are_deterministic():
    lengths = np.random.default_rng(0).integers(5, 128, size=1000)
    batches = bucketed_batches(lengths, 32, pool=8, rng=epoch_rng(7, 0))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    again = bucketed_batches(lengths, 32, pool=8, rng=epoch_rng(7, 0))
    assert all((a == b).all() for a, b in zip(batches, again, strict=True))
    other = bucketed_batches(lengths, 32, pool=8, rng=epoch_rng(8, 0))
    assert any(not np.array_equal(a, b) for a, b in zip(batches, other, strict=False))


def test_bucketing_cuts_padding_but_keeps_randomness():
    lengths = np.random.default_rng(0).integers(5, 128, size=4000)
    random_batches = bucketed_batches(lengths, 32, pool=1, rng=epoch_rng(0, 0))  # pool of one batch = plain shuffling
    pooled = bucketed_batches(lengths, 32, pool=64, rng=epoch_rng(0, 0))
    assert padding_fraction(lengths, pooled) < 0.05 < padding_fraction(lengths, random_batches)
    # batches are not in length order: the first ten batches' mean lengths are not sorted
    means = [lengths[b].mean() for b in pooled[:10]]
    assert means != sorted(means)


def test_pad_batch_masks():
    ids, mask = pad_batch([np.array([1, 2, 3]), np.array([4])], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_epoch_orders_are_independent_across_seeds_and_epochs():
    """Seed 0's second epoch must not be seed 1's first (as it was with seed + epoch)."""
    lengths = np.ones(500, dtype=np.int64)
    order = {(seed, epoch): np.concatenate(bucketed_batches(lengths, 10, 4, epoch_rng(seed, epoch)))
             for seed in range(3) for epoch in range(3)}
    keys = list(order)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert not np.array_equal(order[a], order[b]), (a, b)
    again = np.concatenate(bucketed_batches(lengths, 10, 4, epoch_rng(0, 1)))
    assert np.array_equal(order[(0, 1)], again)


def test_sorted_batches_cover_everything_in_length_order():
    lengths = np.array([5, 1, 4, 2, 3])
    batches = sorted_batches(lengths, 2)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 2], [0]]
