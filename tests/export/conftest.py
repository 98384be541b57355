"""Export tests run their tiny models on one thread (tiny ops on 2 busy cores wait at thread barriers)."""

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    yield
