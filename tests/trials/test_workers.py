"""Sweeps as separate worker processes, the way users run them: a sweep killed with SIGKILL and started
again finishes every trial exactly once, and two workers sharing one SQLite study neither lose nor repeat
a trial."""

import os
import signal
import subprocess
from collections import Counter

import optuna
from optuna.trial import TrialState

from tests.trials.sweep_workers import finished_once, study_name, sweep_command, sweep_folder, wait_for


def test_sweep_killed_and_restarted_finishes_each_trial_once(tmp_path):
    # trial 1 runs 24 steps, so the kill lands mid-training, after some of its checkpoints
    command = sweep_command(tmp_path, "--grid", "train.max_steps=[3,24,4]")
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = wait_for(worker, "demo/sweep-*/trial-000/summary.json", tmp_path)
    wait_for(worker, "demo/sweep-*/trial-001/checkpoints/last", tmp_path)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    first_written = first.stat().st_mtime_ns
    assert not (first.parent.parent / "trial-001" / "summary.json").exists()
    restarted = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    folder = sweep_folder(tmp_path)
    events = finished_once(folder, [3, 24, 4])
    assert first.stat().st_mtime_ns == first_written  # the finished trial was not trained again
    starts = [(e["slot"], e["resume"]) for e in events if e["event"] == "start"]
    # only the killed trial started twice, the second time from its checkpoint
    assert sorted(starts, key=lambda s: (s[0], s[1] or "")) == [(0, None), (1, None), (1, "checkpoint"), (2, None)]
    study = optuna.load_study(study_name=study_name(folder),
                              storage=f"sqlite:///{folder / 'study.db'}")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["slot"] for t in complete) == [0, 1, 2]
    stale = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [(t.user_attrs["slot"], t.user_attrs.get("stale")) for t in stale] == [(1, True)]  # the killed one
    assert "3 trials, 3 complete" in restarted.stdout


def test_two_workers_share_one_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    command = sweep_command(tmp_path, "--search", "optuna", "--trials", "4", "--grid", "adapter.rank=[2,4,8,16]",
                            "--storage", storage)
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-3000:] for _, err in outputs]
    folder = sweep_folder(tmp_path)
    events = finished_once(folder, [3, 3, 3, 3])
    starts = Counter(e["slot"] for e in events if e["event"] == "start")
    assert starts == Counter(range(4))  # no slot was started twice, by either worker
    study = optuna.load_study(study_name=study_name(folder), storage=storage)
    assert len(study.trials) == 4  # no surplus, no stale, no duplicate trials
    assert sorted(t.user_attrs["slot"] for t in study.trials if t.state.is_finished()) == [0, 1, 2, 3]
    assert not (folder / "study.db").exists()  # the shared storage was used, not the default
    ran = sum(int(out.split("this worker ran ")[1].split()[0]) for out, _ in outputs)
    assert ran == 4
