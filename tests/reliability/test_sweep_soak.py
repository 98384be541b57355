"""Soak: a 20-trial sweep with 2 worker processes on one SQLite study, workers SIGKILLed at seeded random
moments (claiming, training, checkpointing, telling the study) and replaced until the sweep is done. Every
trial ends COMPLETE exactly once, each run dir logs each step once, and a trial killed mid-training
resumes from its checkpoint instead of starting over.

Kills start once the slots exist: a worker killed while enqueuing them makes the others wait out
SLOT_WAIT_S before filling in (tunelab/trials/study.py), which is correct but too slow for a soak.
About a minute on 2 busy cores (12 kills, 20 trials)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from tests.trials.sweep_workers import study_name, sweep_command
from tunelab.rundir import read_jsonl

SEED = 20261203
KILLS = 12
WORKERS = 2
DEADLINE_S = 170
LONG_STEPS = 12  # long enough for the first kill to land between a trial's checkpoints
GRID = ["--grid", "adapter.rank=[2,4,8,16,32]", "--grid", f"train.max_steps=[3,4,5,{LONG_STEPS}]"]


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def folder_of(root: Path) -> Path | None:
    folders = list((root / "demo").glob("sweep-*"))
    return folders[0] if folders else None


def owner_of(folder: Path, slot: int) -> int | None:
    """The pid of the worker that last started `slot` (from the sweep's audit log)."""
    starts = [e for e in read_jsonl(folder / "events.jsonl") if e["event"] == "start" and e["slot"] == slot]
    return int(starts[-1]["worker"].rsplit(":", 1)[1]) if starts else None


def long_trial_training(folder: Path) -> int | None:
    """A long trial that has a checkpoint but no summary yet: killing its worker now lands mid-training."""
    for last in folder.glob("trial-*/checkpoints/last"):
        run_dir = last.parent.parent
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        if config["train"]["max_steps"] == LONG_STEPS and not (run_dir / "summary.json").exists():
            return int(run_dir.name.removeprefix("trial-"))
    return None


def reap(workers: list[subprocess.Popen]) -> None:
    """Workers that exited on their own must have succeeded; they leave the pool (nothing was waiting)."""
    for worker in [w for w in workers if w.poll() is not None]:
        assert worker.returncode == 0, worker.stderr.read()[-3000:]
        workers.remove(worker)


def kill(workers: list[subprocess.Popen], pid: int, command: list[str]) -> bool:
    """SIGKILL the pool's worker `pid` and start its replacement; False when it had already exited."""
    victim = next((w for w in workers if w.pid == pid and w.poll() is None), None)
    if victim is None:
        return False
    os.kill(pid, signal.SIGKILL)
    victim.wait()
    workers.remove(victim)
    workers.append(start(command))
    return True


def soak(root: Path, rng: random.Random) -> tuple[Path, int | None, int]:
    """Run the sweep under kills; returns its folder, the slot killed mid-training and the kill count."""
    command = sweep_command(root, *GRID)
    workers = [start(command) for _ in range(WORKERS)]
    deadline, killed_long, kills = time.monotonic() + DEADLINE_S, None, 0
    try:
        while workers:
            assert time.monotonic() < deadline, f"soak past {DEADLINE_S} s after {kills} kills"
            reap(workers)
            folder = folder_of(root)
            if not workers or folder is None or not (folder / "events.jsonl").exists():
                time.sleep(0.05)  # no kills until the slots are enqueued (see module docstring)
                continue
            if killed_long is None:  # the first kill: a long trial between two of its checkpoints
                slot = long_trial_training(folder)
                if slot is not None and kill(workers, owner_of(folder, slot), command):
                    killed_long, kills = slot, kills + 1
                    assert not (folder / f"trial-{slot:03d}" / "summary.json").exists()
                time.sleep(0.02)
                continue
            if kills < KILLS:
                time.sleep(rng.uniform(0.3, 5.0))
                live = [w for w in workers if w.poll() is None]
                if live and kill(workers, rng.choice(live).pid, command):
                    kills += 1
                continue
            time.sleep(0.1)
    finally:
        for worker in workers:
            worker.kill()
    return folder, killed_long, kills


def test_sweep_soak_random_sigkills_every_trial_once(tmp_path):
    started = time.monotonic()
    folder, killed_long, kills = soak(tmp_path, random.Random(SEED))
    assert killed_long is not None and kills == KILLS
    storage = f"sqlite:///{folder / 'study.db'}"
    study = optuna.load_study(study_name=study_name(folder), storage=storage)
    complete = Counter(t.user_attrs["slot"] for t in study.trials if t.state == TrialState.COMPLETE)
    assert complete == Counter(range(20))  # every trial counted exactly once
    others = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.FAIL and t.user_attrs.get("stale") for t in others)  # only killed attempts
    assert len(others) <= kills
    events = read_jsonl(folder / "events.jsonl")
    finishes = Counter(e["slot"] for e in events if e["event"] == "finish")
    # at most once: a kill between study.tell and the audit line may drop one finish line, never add one
    assert max(finishes.values()) == 1 and len(finishes) >= 20 - kills
    for slot in range(20):
        run_dir = folder / f"trial-{slot:03d}"
        steps = yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["max_steps"]
        logged = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r]
        assert logged == list(range(1, steps + 1)), (slot, logged)  # no step trained twice
    resumes = [e["resume"] for e in events if e["event"] == "start" and e["slot"] == killed_long]
    assert resumes[0] is None and "checkpoint" in resumes[1:], resumes  # resumed, not started over
    print(f"soak: 20 trials, {kills} kills, {len(others)} trials re-run, {time.monotonic() - started:.0f} s")
