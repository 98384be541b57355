"""Adapter tests run their tiny models on one thread.

With 2 OpenMP threads on a 2-core machine shared with other work, every op on a (3, 6, 32) tensor waits
at a barrier for a descheduled thread: the suite went from ~5 s to ~60 s under load.
"""

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    yield
