"""Adapter tests run their tiny models on one thread.

With 2 OpenMP threads on a 2-core machine shared with other work, every op on a (3, 6, 32) tensor waits
at a barrier for a descheduled thread: the suite went from ~5 s to ~60 s under load. One thread is as
fast for these sizes and immune to that; the previous setting is restored for other test packages.
"""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
