"""`tunelab sweep`: run a grid or an Optuna (TPE + median pruning) search over a recipe.

One call is one worker. Start the same command again after a crash and it resumes; start it on several
machines with one `--storage` URL and they share the trials (tunelab/trials/study.py explains how no
trial is lost or run twice). Trial k writes runs/<recipe>/sweep-<name>/trial-<k>/, an ordinary run
dir, so `tunelab compare` and `tunelab report` read sweeps like any other runs.

A trial killed mid-training is re-run in its own run dir: from its last checkpoint when the recipe
saves checkpoints (`train.checkpoint_every`, or `train.eval_every`), from step 0 otherwise. A trial whose
summary.json was written before the kill is never trained again.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import TunelabError
from tunelab.progress import console
from tunelab.recipes import config_to_dict
from tunelab.rundir import append_jsonl, atomic_write_json, read_jsonl
from tunelab.runner import RunOutcome, quiet_transformers, run_single
from tunelab.trials.space import check_space, expand_grid, trial_config
from tunelab.trials.spec import ResolvedSweep, SweepSpec, describe, redacted, resolve
from tunelab.trials.study import (
    POLL_S,
    claim_trial,
    ensure_slots,
    heartbeat,
    open_storage,
    open_study,
    quiet_optuna,
    recover_stale,
    running_elsewhere,
    slot_states,
    worker_identity,
)
from tunelab.trials.trackers import open_tracker


@dataclass
class SweepResult:
    folder: Path
    study_name: str
    slots: int
    states: dict[int, str]
    ran: list[int] = field(default_factory=list)
    outcomes: list[RunOutcome] = field(default_factory=list)


def slot_points(sweep: ResolvedSweep) -> list[dict[str, Any]]:
    """What each slot starts with: a grid point (Optuna-encoded), or nothing for TPE to sample."""
    if sweep.search == "grid":
        points = expand_grid(sweep.params)
        check_space(sweep.base, sweep.params, points)
        by_name = {p.name: p for p in sweep.params}
        return [{k: by_name[k].encode(v) for k, v in point.items()} for point in points]
    check_space(sweep.base, sweep.params)
    return [{} for _ in range(sweep.spec.trials or 0)]


def make_sampler(sweep: ResolvedSweep, slot: int = 0):
    """TPE seeded per slot: two workers never draw the same random start-up points, a rerun draws the same."""
    import optuna

    if sweep.search == "grid":
        return optuna.samplers.RandomSampler(seed=sweep.spec.seed)  # never asked: grid slots are fixed
    startup = min(10, max(2, (sweep.spec.trials or 0) // 3))
    return optuna.samplers.TPESampler(seed=(sweep.spec.seed or 0) * 100_003 + slot, n_startup_trials=startup,
                                      constant_liar=True)


def make_pruner(sweep: ResolvedSweep):
    import optuna

    if sweep.search == "grid" or not sweep.spec.prune:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def run_sweep(spec: SweepSpec) -> SweepResult:
    """Run trials until none is waiting or running; return the sweep's state (this worker's and the others')."""
    sweep = resolve(spec)
    points = slot_points(sweep)
    tracker = open_tracker(sweep.spec.tracker, sweep.folder, sweep.study_name)  # fails before any training
    quiet_optuna()
    quiet_transformers()
    storage = open_storage(sweep.storage_url)  # an unreachable database fails before any folder is made
    study = open_study(storage, sweep.study_name, sweep.direction, make_sampler(sweep), make_pruner(sweep))
    sweep.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(sweep.folder / "sweep.json", {**describe(sweep), "slots": len(points)})
    ensure_slots(study, storage, sweep.storage_url, points)
    done = slot_states(study)
    console.print(f"sweep {sweep.study_name}: {sweep.search}, {len(points)} trials ({len(done)} finished), "
                  f"metric {sweep.metric} ({sweep.direction}) -> {sweep.folder} "
                  f"[storage {redacted(sweep.storage_url)}]")
    result = SweepResult(sweep.folder, sweep.study_name, len(points), done)
    waiting_said = False
    while True:
        for slot in recover_stale(study, storage, sweep.storage_url):
            console.print(f"trial-{slot:03d}: its worker is gone; queued again (resumes in its run dir)")
        trial = claim_trial(study, sweep.storage_url)
        if trial is None:
            if not (running := running_elsewhere(study)):
                break
            if not waiting_said:  # a running trial's worker may still die; its slot would come back here
                console.print(f"no trial waiting; {running} still running on other workers, watching them")
                waiting_said = True
            time.sleep(POLL_S)
            continue
        waiting_said = False
        study.sampler = make_sampler(sweep, trial.user_attrs["slot"])
        result.ran.append(run_trial(sweep, study, trial, tracker))
    result.states = slot_states(study)
    result.outcomes = finished_outcomes(sweep.folder)
    return result


def run_trial(sweep: ResolvedSweep, study, trial, tracker) -> int:
    """Train one claimed trial in its slot's run dir and tell the study; returns the slot."""
    from optuna.trial import TrialState

    slot = trial.user_attrs["slot"]
    values = {p.name: p.suggest(trial) for p in sweep.params}
    config = trial_config(sweep.base, values, source=f"sweep trial {slot}")
    label = f"trial-{slot:03d}"
    resume = prepare_run_dir(sweep.folder / label, config)
    log_event(sweep.folder, "start", slot, trial.number, resume=resume_kind(resume))
    pruned = False

    def on_eval(step: int, metrics: dict[str, Any]) -> bool:
        nonlocal pruned
        if isinstance(metrics.get(sweep.metric), int | float):
            trial.report(float(metrics[sweep.metric]), step)
            pruned = trial.should_prune()
        return pruned

    started = time.perf_counter()
    try:
        with heartbeat(trial):
            outcome = run_single(config, label, sweep.folder, resume=resume, run_id=label, on_eval=on_eval)
    except TunelabError as exc:
        if "max_trainable" not in str(exc):  # only an over-budget point is "infeasible"; others are real errors
            fail(study, trial, exc, sweep.folder)
            raise
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.PRUNED)  # TPE learns to avoid the region; FAIL would teach nothing
        log_event(sweep.folder, "infeasible", slot, trial.number)
        console.print(f"{label}: infeasible, {exc}")
        return slot
    except Exception as exc:
        fail(study, trial, exc, sweep.folder)
        raise
    finish_trial(sweep, study, trial, outcome, values, pruned)
    if tracker is not None:
        tracker.log_run(outcome.label, outcome.run_dir, values, outcome.summary)
    console.print(f"{label}: {fmt_values(values)} -> {sweep.metric} "
                  f"{outcome.summary['metrics'].get(sweep.metric)} ({'pruned' if pruned else 'done'}, "
                  f"{time.perf_counter() - started:.1f} s)")
    return slot


def finish_trial(sweep: ResolvedSweep, study, trial, outcome: RunOutcome, values: dict[str, Any],
                 pruned: bool) -> None:
    """Record the result in the run dir (trial.json) first, then in the study."""
    from optuna.trial import TrialState

    slot = trial.user_attrs["slot"]
    previous = read_trial_json(outcome.run_dir)
    pruned = pruned or previous.get("state") == "PRUNED"  # a rerun of a trial killed after it was pruned
    value = outcome.summary.get("metrics", {}).get(sweep.metric)
    if not isinstance(value, int | float):
        names = sorted(k for k, v in outcome.summary.get("metrics", {}).items() if isinstance(v, int | float))
        exc = TunelabError(f"sweep metric '{sweep.metric}' is not in the run's metrics ({', '.join(names)})")
        fail(study, trial, exc, sweep.folder)
        raise exc
    state = TrialState.PRUNED if pruned else TrialState.COMPLETE
    atomic_write_json(outcome.run_dir / "trial.json", {
        "slot": slot, "number": trial.number, "state": state.name, "value": value, "metric": sweep.metric,
        "params": values, "study": sweep.study_name})
    study.tell(trial, None if pruned else float(value), state=state)
    log_event(sweep.folder, "finish", slot, trial.number, state=state.name)


def fail(study, trial, exc: BaseException, folder: Path) -> None:
    """A real error (not a kill): the slot ends FAIL with the message, and the sweep stops."""
    from optuna.trial import TrialState

    trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
    study.tell(trial, state=TrialState.FAIL)
    log_event(folder, "fail", trial.user_attrs.get("slot"), trial.number)


def prepare_run_dir(run_dir: Path, config) -> Path | None:
    """Decide how an existing slot dir is reused: finished -> returned as is by the runner; checkpoint ->
    resumed; neither -> restarted after dropping the killed attempt's metrics lines; another config
    (e.g. the study database was deleted and TPE drew new params) -> moved aside, never overwritten."""
    if not run_dir.exists():
        return None
    saved = run_dir / "config.yaml"
    if saved.exists() and yaml.safe_load(saved.read_text(encoding="utf-8")) != config_to_dict(config):
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{int(time.time())}")
        shutil.move(str(run_dir), str(aside))
        console.print(f"{run_dir.name}: existing run dir has other params; moved to {aside.name}")
        return None
    if not (run_dir / "summary.json").exists() and not (run_dir / "checkpoints" / "last").exists():
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    return run_dir


def resume_kind(run_dir: Path | None) -> str | None:
    """How a claimed slot starts: fresh (None), 'finished' (summary written before a kill: only recorded),
    'checkpoint' (training continues), or 'restart' (killed before its first checkpoint)."""
    if run_dir is None:
        return None
    if (run_dir / "summary.json").exists():
        return "finished"
    return "checkpoint" if (run_dir / "checkpoints" / "last").exists() else "restart"


def read_trial_json(run_dir: Path) -> dict[str, Any]:
    import json

    path = Path(run_dir) / "trial.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def log_event(folder: Path, event: str, slot: int | None, number: int, **extra: Any) -> None:
    """events.jsonl: an audit trail of starts and finishes per slot (what the multi-worker test reads)."""
    worker = worker_identity()
    append_jsonl(Path(folder) / "events.jsonl", {"time": round(time.time(), 3), "event": event, "slot": slot,
                                                 "trial": number, "worker": f"{worker['host']}:{worker['pid']}",
                                                 **extra})


def events(folder: Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(folder) / "events.jsonl")


def finished_outcomes(folder: Path) -> list[RunOutcome]:
    """The trials of a sweep folder that have a summary.json, in slot order."""
    import json

    outcomes = []
    for summary in sorted(Path(folder).glob("trial-*/summary.json")):
        if re.fullmatch(r"trial-\d+", summary.parent.name):
            outcomes.append(RunOutcome(summary.parent.name, summary.parent, json.loads(summary.read_text())))
    return outcomes


def fmt_values(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
