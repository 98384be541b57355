"""Interrupt a run at its N-th loss computation, as Ctrl-C or a kill would, for resume tests."""

from __future__ import annotations

import pytest


def interrupted_run(monkeypatch, task_class: type, call: int, run) -> None:
    """Run `run()` with `task_class.loss_fn` raising KeyboardInterrupt at its `call`-th call; restore it."""
    original, calls = task_class.loss_fn, {"n": 0}

    def crash(self, model, batch):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(self, model, batch)

    monkeypatch.setattr(task_class, "loss_fn", crash)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(task_class, "loss_fn", original)
