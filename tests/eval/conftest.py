"""Eval tests run torch on one thread.

Generation is many tiny sequential forwards; with 2 OpenMP threads on a 2-core machine shared with
other work each op waits at a barrier for a descheduled thread (SmolLM2's 12-token test went from
1.2 s to 31 s under load). One thread is as fast at these sizes; the previous setting is restored.
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
