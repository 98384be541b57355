"""Helpers for tests that run `tunelab sweep` as separate worker processes, the way users run them: a tiny
recipe, the sweep folder, the exactly-once audit of a finished sweep, and waiting on a worker's files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tunelab.rundir import read_jsonl

# configs/demo.yaml cut to a few seconds a trial on 2 cores: 16 rows, 3 steps, one thread, a checkpoint
# every step (so a killed trial always has one to resume from once its first step is done)
TINY = ["variants={}", "data.limit=16", "data.eval_limit=16", "train.max_steps=3", "train.batch_size=8",
        "model.max_length=32", "adapter.max_trainable=null", "adapter.plan=fixed", "train.threads=1",
        "train.log_every=1", "train.checkpoint_every=1"]


def sweep_command(root: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "tunelab.trials.commands", "sweep", "configs/demo.yaml", *TINY,
            f"output_dir={root}", *flags]


def sweep_folder(root: Path) -> Path:
    folders = list((root / "demo").glob("sweep-*"))
    assert len(folders) == 1, folders
    return folders[0]


def study_name(folder: Path) -> str:
    return f"demo/{folder.name.removeprefix('sweep-')}"


def finished_once(folder: Path, steps: list[int]) -> list[dict]:
    """Every slot finished exactly once in the audit log, every run dir's steps logged once each (a trial
    trained twice to completion would log its steps twice or finish twice)."""
    events = read_jsonl(folder / "events.jsonl")
    finishes = Counter(e["slot"] for e in events if e["event"] == "finish")
    assert finishes == Counter(range(len(steps))), events
    for slot, total in enumerate(steps):
        logged = [r["step"] for r in read_jsonl(folder / f"trial-{slot:03d}" / "metrics.jsonl") if "loss" in r]
        assert logged == list(range(1, total + 1)), (slot, logged)
        assert json.loads((folder / f"trial-{slot:03d}" / "summary.json").read_text())["steps"] == total
    return events


def wait_for(worker: subprocess.Popen, pattern: str, root: Path, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        found = list(root.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"{pattern} never appeared: {worker.stderr.read() if worker.poll() is not None else ''}")
