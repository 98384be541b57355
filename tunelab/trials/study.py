"""The Optuna study behind a sweep, used so that no trial is lost or run twice.

A sweep of N trials is N *slots*. The first worker enqueues one WAITING Optuna trial per slot (a grid
point, or empty params for TPE to fill when the trial starts); every worker then loops: recover stale
trials, claim a WAITING trial (WAITING -> RUNNING is atomic in the storage), run it, tell the result.
When nothing is WAITING but other workers' trials still run, the worker waits (one of them may die and
its slot come back); it exits when nothing is WAITING or RUNNING. The study is the one source of truth.

- Slot creation happens once: only the worker that creates the marker study `<name>:slots:<N>` (a
  unique name, so exactly one `create_new_study` succeeds even across machines) enqueues; the others
  wait until N slots exist.
- A RUNNING trial is stale when its worker is gone: the same host and that pid (with that start time)
  no longer exists, or its heartbeat (a user attr refreshed every HEARTBEAT_S by a thread) is older
  than STALE_AFTER_S (other machines). A trial claimed but never tagged with its worker (a kill in the
  milliseconds between Optuna's ask and our tag) is stale UNTAGGED_GRACE_S after it started. A stale
  trial is set FAIL (atomic: one recoverer wins) and its slot re-enqueued with the same params, so the
  rerun lands in the same run dir and resumes there; a slot left with only stale trials (its recoverer
  killed between the two) is re-enqueued by the next recovery.
- SQLite does not lock rows (its read-then-write in `set_trial_state_values` can race between
  processes), so claims and recoveries on a SQLite file also hold a file lock beside the database.
  PostgreSQL/MySQL lock the row (SELECT ... FOR UPDATE) and need no file lock.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

HEARTBEAT_S = 30.0
STALE_AFTER_S = 180.0
SLOT_WAIT_S = 120.0
UNTAGGED_GRACE_S = 20.0  # tagging follows the claim within milliseconds; this leaves room for a slow database
POLL_S = 1.0


def quiet_optuna() -> None:
    """tunelab prints one line per trial itself; Optuna's INFO lines and experimental warnings add noise."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_storage(url: str, attempts: int = 3):
    """An RDBStorage; SQLite waits up to a minute for a locked database instead of failing at once.

    Two workers starting on a fresh database both try to create Optuna's tables; under the file lock
    (SQLite) one goes first, and a server database's "already exists" race is retried."""
    import optuna

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        try:
            with storage_lock(url):
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except ImportError as exc:
            raise TunelabError(f"--storage {url.split(':')[0]}: database driver missing ({exc}); "
                               "e.g. pip install 'tunelab[postgres]' for PostgreSQL") from None
        except Exception as exc:  # noqa: BLE001 - connection problems become one line for the user
            if attempt + 1 < attempts and "already exists" in str(exc):
                time.sleep(0.5 + attempt)
                continue
            raise TunelabError(f"cannot open sweep storage: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0]}") from None
    raise AssertionError("unreachable")


@contextlib.contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """A file lock beside a SQLite database (see module docstring); nothing for server databases."""
    if not url.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    with FileLock(url.removeprefix("sqlite:///") + ".lock"):
        yield


def open_study(storage, name: str, direction: str, sampler, pruner):
    import optuna

    return optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def slot_of(trial) -> int | None:
    return trial.user_attrs.get("slot")


def slots_present(study) -> set[int]:
    return {s for t in study.get_trials(deepcopy=False) if (s := slot_of(t)) is not None}


def ensure_slots(study, storage, url: str, points: list[dict[str, Any]]) -> None:
    """Enqueue one WAITING trial per slot, exactly once across all workers (see module docstring)."""
    import optuna

    marker = f"{study.study_name}:slots:{len(points)}"
    try:
        storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], marker)
    except optuna.exceptions.DuplicatedStudyError:
        deadline = time.monotonic() + SLOT_WAIT_S
        while len(slots_present(study)) < len(points) and time.monotonic() < deadline:
            time.sleep(0.2)  # another worker is enqueuing right now
        if len(slots_present(study)) >= len(points):
            return  # otherwise that worker died mid-way: fill in the rest below
    with storage_lock(url):
        present = slots_present(study)
        for slot, params in enumerate(points):
            if slot not in present:
                study.enqueue_trial(params, user_attrs={"slot": slot})


def worker_identity() -> dict[str, Any]:
    import psutil

    me = psutil.Process()
    return {"host": socket.gethostname(), "pid": me.pid, "started": round(me.create_time(), 3)}


def worker_alive(worker: dict[str, Any]) -> bool | None:
    """True/False for a worker on this host; None when it ran elsewhere (only the heartbeat can tell)."""
    import psutil

    if worker.get("host") != socket.gethostname():
        return None
    try:
        return round(psutil.Process(worker["pid"]).create_time(), 3) == worker.get("started")
    except (psutil.NoSuchProcess, KeyError):
        return False


def is_stale(trial, now: float | None = None) -> bool:
    worker = trial.user_attrs.get("worker")
    if worker is None:  # claimed but not yet tagged (see module docstring)
        started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        return (now or time.time()) - started > UNTAGGED_GRACE_S
    alive = worker_alive(worker)
    if alive is not None:
        return not alive
    return (now or time.time()) - float(trial.user_attrs.get("heartbeat", 0)) > STALE_AFTER_S


def recover_stale(study, storage, url: str) -> list[int]:
    """FAIL every RUNNING trial whose worker is gone and re-enqueue its slot; returns the recovered slots."""
    import optuna
    from optuna.trial import TrialState

    recovered = []
    study_id = storage.get_study_id_from_name(study.study_name)
    with storage_lock(url):
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if slot_of(trial) is None or not is_stale(trial):
                continue
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            try:
                storage.set_trial_user_attr(trial_id, "stale", True)
                if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker recovered it first
            study.enqueue_trial(params_of(trial), user_attrs={"slot": slot_of(trial), "retry_of": trial.number})
            recovered.append(slot_of(trial))
        recovered += requeue_orphans(study)
    return recovered


def params_of(trial) -> dict[str, Any]:
    """The params a retry must reuse: the enqueued grid point (Optuna keeps it as `fixed_params` until the
    trial suggests it) plus whatever TPE sampled before the worker died."""
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


def requeue_orphans(study, now: float | None = None) -> list[int]:
    """Re-enqueue slots whose every trial is a stale FAIL: a recoverer killed between its FAIL and its
    enqueue leaves such a slot. Only after UNTAGGED_GRACE_S, so a live recoverer's enqueue is not doubled."""
    by_slot: dict[int, list] = {}
    for trial in study.get_trials(deepcopy=False):
        if (slot := slot_of(trial)) is not None and not trial.user_attrs.get("surplus"):
            by_slot.setdefault(slot, []).append(trial)
    orphans = []
    for slot, trials in sorted(by_slot.items()):
        if not all(t.user_attrs.get("stale") and t.state.is_finished() for t in trials):
            continue
        last = max(trials, key=lambda t: t.number)
        ended = last.datetime_complete.timestamp() if last.datetime_complete else 0.0
        if (now or time.time()) - ended > UNTAGGED_GRACE_S:
            study.enqueue_trial(params_of(last), user_attrs={"slot": slot, "retry_of": last.number})
            orphans.append(slot)
    return orphans


def claim_trial(study, url: str):
    """The next WAITING slot as a RUNNING trial, or None when no slot is waiting."""
    from optuna.trial import TrialState

    while True:
        with storage_lock(url):
            if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return None
            trial = study.ask()  # pops a WAITING trial atomically; creates a new one only if none is left
        if trial.user_attrs.get("slot") is not None:
            trial.set_user_attr("worker", worker_identity())
            trial.set_user_attr("heartbeat", time.time())
            return trial
        # a worker on another machine took the last slot between our look and our ask: drop the extra trial
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=TrialState.FAIL)


def running_elsewhere(study) -> int:
    """How many slot trials are RUNNING (other workers': this one calls it only between its own trials)."""
    from optuna.trial import TrialState

    return sum(slot_of(t) is not None for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


@contextlib.contextmanager
def heartbeat(trial, every: float = HEARTBEAT_S) -> Iterator[None]:
    """Refresh the trial's heartbeat from a thread while it trains, so other machines see it alive."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            with contextlib.suppress(Exception):  # a missed beat only delays recovery, never breaks training
                trial.set_user_attr("heartbeat", time.time())

    thread = threading.Thread(target=beat, name="tunelab-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def slot_states(study) -> dict[int, str]:
    """slot -> COMPLETE, PRUNED, INFEASIBLE (over budget, never trained) or FAIL; stale/surplus ignored."""
    done: dict[int, str] = {}
    for trial in study.get_trials(deepcopy=False):
        slot = slot_of(trial)
        if slot is None or trial.user_attrs.get("stale") or trial.user_attrs.get("surplus"):
            continue
        if trial.state.is_finished():
            infeasible = trial.state.name == "PRUNED" and trial.user_attrs.get("error")
            done[slot] = "INFEASIBLE" if infeasible else trial.state.name
    return done
