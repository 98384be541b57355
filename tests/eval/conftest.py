"""Eval tests run torch on one thread.

Generation is many tiny sequential forwards; with 2 OpenMP threads on a 2-core machine shared with
other work each op waits at a barrier for a descheduled thread (SmolLM2's 12-token test went from
1.2 s to 31 s under load). One thread is as fast at these sizes.
"""

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    yield
