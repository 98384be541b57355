"""Files from elsewhere are data, never code: a checkpoint whose state.pt is a crafted pickle is refused with
one line on --resume and its payload never runs; a torn safetensors file is refused the same way."""

from __future__ import annotations

import os
import pickle

import pytest

from tests.train.test_loop import run_toy
from tests.train.toy_task import ToyTask
from tunelab.errors import TunelabError


class Payload:
    """Unpickling this calls os.system: what a malicious 'checkpoint' downloaded from the internet does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_pickle_in_a_checkpoint_is_refused_and_never_runs(tmp_path):
    overrides = {"train.max_steps": 6, "train.checkpoint_every": 3}
    run_toy(tmp_path, "run", overrides)
    state = tmp_path / "run" / "checkpoints" / "last" / "state.pt"
    marker = tmp_path / "pwned"
    with open(state, "wb") as handle:
        pickle.dump({"optimizer": Payload(marker)}, handle)
    with pytest.raises(TunelabError, match="is not a checkpoint tunelab can read safely"):
        run_toy(tmp_path, "run", overrides, resume=True, task=ToyTask(overrides))
    assert not marker.exists()


def test_a_torn_weights_file_is_refused(tmp_path):
    overrides = {"train.max_steps": 6, "train.checkpoint_every": 3}
    run_toy(tmp_path, "run", overrides)
    weights = tmp_path / "run" / "checkpoints" / "last" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(TunelabError, match="trainable.safetensors is missing or damaged"):
        run_toy(tmp_path, "run", overrides, resume=True, task=ToyTask(overrides))
