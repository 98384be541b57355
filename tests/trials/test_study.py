"""The study bookkeeping without training: slots are enqueued once, a dead worker's trial is recovered into
the same slot with the same params, and two processes claiming from one SQLite file never share a slot."""

import json
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import optuna
from optuna.trial import TrialState

from tunelab.trials import study as study_module
from tunelab.trials.study import (
    STALE_AFTER_S,
    claim_trial,
    ensure_slots,
    heartbeat,
    is_stale,
    open_storage,
    open_study,
    quiet_optuna,
    recover_stale,
    running_elsewhere,
    slot_states,
)

CLAIMER = """
import json, sys, time
from tunelab.trials.study import claim_trial, ensure_slots, open_storage, open_study, quiet_optuna
import optuna
quiet_optuna()
url, out = sys.argv[1], sys.argv[2]
storage = open_storage(url)
study = open_study(storage, "s", "maximize", optuna.samplers.RandomSampler(0), optuna.pruners.NopPruner())
ensure_slots(study, storage, url, [{"x": i} for i in range(24)])
claimed = []
while (trial := claim_trial(study, url)) is not None:
    slot = trial.user_attrs["slot"]
    claimed.append(slot)
    time.sleep(0.01)
    study.tell(trial, float(trial.suggest_int("x", 0, 100)))
json.dump(claimed, open(out, "w"))
"""


def make_study(tmp_path, points):
    quiet_optuna()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = open_storage(url)
    study = open_study(storage, "s", "maximize", optuna.samplers.RandomSampler(0), optuna.pruners.NopPruner())
    ensure_slots(study, storage, url, points)
    return url, storage, study


def test_slots_are_enqueued_once(tmp_path):
    url, storage, study = make_study(tmp_path, [{"x": 1}, {"x": 2}, {"x": 3}])
    ensure_slots(study, storage, url, [{"x": 1}, {"x": 2}, {"x": 3}])  # a second worker / a restart
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.user_attrs["slot"] for t in waiting) == [0, 1, 2]


def test_dead_local_worker_is_recovered_into_the_same_slot(tmp_path):
    url, storage, study = make_study(tmp_path, [{"x": 10}, {"x": 20}])
    trial = claim_trial(study, url)
    assert trial.suggest_int("x", 0, 100) == 10 and trial.user_attrs["slot"] == 0
    assert recover_stale(study, storage, url) == []  # its worker (this process) is alive
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "started": 0.0})
    assert recover_stale(study, storage, url) == [0]  # same pid, other start time: a dead process
    assert recover_stale(study, storage, url) == []  # recovered once only
    other = claim_trial(study, url)  # waiting trials are claimed in order: slot 1, then the retry of slot 0
    study.tell(other, 2.0)
    retry = claim_trial(study, url)
    assert retry.user_attrs["slot"] == 0 and retry.user_attrs["retry_of"] == trial.number
    assert retry.suggest_int("x", 0, 100) == 10  # same params: the rerun lands in the same run dir
    study.tell(retry, 1.0)
    assert slot_states(study) == {0: "COMPLETE", 1: "COMPLETE"}  # the stale FAIL does not count
    assert claim_trial(study, url) is None


def test_a_claim_killed_before_its_tag_is_recovered_after_a_short_grace(tmp_path, monkeypatch):
    """A worker SIGKILLed between Optuna's ask and our worker tag leaves a RUNNING trial naming nobody:
    it is recovered once the grace has passed, and until then it counts as running (workers wait)."""
    url, storage, study = make_study(tmp_path, [{"x": 10}])
    monkeypatch.setattr(study_module, "UNTAGGED_GRACE_S", 0.3)
    orphan = study.ask()  # claimed, never tagged: what a kill right after the ask leaves behind
    assert orphan.user_attrs["slot"] == 0 and "worker" not in orphan.user_attrs
    assert claim_trial(study, url) is None and running_elsewhere(study) == 1
    assert recover_stale(study, storage, url) == []  # still within the grace: its worker may be tagging
    time.sleep(0.4)
    assert recover_stale(study, storage, url) == [0]
    retry = claim_trial(study, url)
    assert retry.user_attrs["slot"] == 0 and retry.user_attrs["retry_of"] == orphan.number
    study.tell(retry, 1.0)
    assert running_elsewhere(study) == 0 and slot_states(study) == {0: "COMPLETE"}


def test_heartbeat_thread_refreshes_the_trial(tmp_path):
    url, storage, study = make_study(tmp_path, [{"x": 1}])
    trial = claim_trial(study, url)
    before = trial.user_attrs["heartbeat"]
    with heartbeat(trial, every=0.05):
        time.sleep(0.5)
    after = study.get_trials()[0].user_attrs["heartbeat"]
    assert after > before


def test_remote_workers_are_judged_by_heartbeat():
    now = time.time()
    remote = {"host": "elsewhere", "pid": 1, "started": 1.0}
    alive = SimpleNamespace(user_attrs={"worker": remote, "heartbeat": now - 10}, datetime_start=None)
    gone = SimpleNamespace(user_attrs={"worker": remote, "heartbeat": now - STALE_AFTER_S - 1}, datetime_start=None)
    assert not is_stale(alive, now) and is_stale(gone, now)


def test_two_processes_claim_disjoint_slots(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    outs = [tmp_path / f"claimed{i}.json" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, url, str(out)]) for out in outs]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    claimed = [json.loads(out.read_text()) for out in outs]
    every = claimed[0] + claimed[1]
    assert sorted(every) == list(range(24)), claimed  # none lost, none twice
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == 24 and all(t.state == TrialState.COMPLETE for t in study.trials)


def test_a_recoverer_killed_between_fail_and_enqueue_loses_no_slot(tmp_path, monkeypatch):
    """The FAIL and the re-enqueue of a stale trial are two writes; a kill between them leaves a slot whose
    only trial is a stale FAIL. The next recovery re-enqueues it (after the grace), once."""
    url, storage, study = make_study(tmp_path, [{"x": 10}])
    monkeypatch.setattr(study_module, "UNTAGGED_GRACE_S", 0.3)
    trial = claim_trial(study, url)
    trial.set_user_attr("stale", True)
    study.tell(trial, state=TrialState.FAIL)  # the recoverer's first write; it dies before enqueuing
    assert claim_trial(study, url) is None and running_elsewhere(study) == 0
    assert recover_stale(study, storage, url) == []  # too fresh: a live recoverer may be enqueuing now
    time.sleep(0.4)
    assert recover_stale(study, storage, url) == [0] and recover_stale(study, storage, url) == []
    retry = claim_trial(study, url)
    assert retry.user_attrs["slot"] == 0 and retry.suggest_int("x", 0, 100) == 10
