"""Optional experiment trackers, off by default: `--tracker tensorboard` or `--tracker mlflow`.

Each finished run's metrics.jsonl, params and final metrics are copied into the tracker after the run
(not streamed live): the run dir stays the source of truth, a tracker failure can never cost a run,
and the same call exports old runs. Files land beside the runs: `<folder>/tensorboard/<label>/`
(event files) or `<folder>/mlruns/` (MLflow's local file store).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

from tunelab.errors import TunelabError
from tunelab.rundir import read_jsonl

# name -> (module it needs, what to pip install). mlflow-skinny is MLflow's client and local file store
# without the server extras; the full `mlflow` wheel pins pyarrow<26, which clashes with tunelab's pin.
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow-skinny")}


class Tracker(Protocol):
    def log_run(self, label: str, run_dir: Path, params: dict[str, Any], summary: dict[str, Any]) -> None: ...


def scalars(record: dict[str, Any], skip: tuple[str, ...] = ("step", "epoch")) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)}


def run_series(run_dir: Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) from metrics.jsonl: train/<key> and eval/<key>."""
    points = []
    for record in read_jsonl(Path(run_dir) / "metrics.jsonl"):
        step = int(record.get("step", 0))
        if isinstance(record.get("eval"), dict):
            points += [(step, f"eval/{k}", v) for k, v in scalars(record["eval"]).items()]
        else:
            points += [(step, f"train/{k}", v) for k, v in scalars(record).items()]
    return points


def final_scalars(summary: dict[str, Any]) -> dict[str, float]:
    finals = {f"final/{k}": v for k, v in scalars(summary.get("metrics", {})).items()}
    for key in ("trainable_params", "samples_per_s", "train_seconds", "wall_seconds"):
        if isinstance(summary.get(key), int | float):
            finals[f"run/{key}"] = float(summary[key])
    return finals


class TensorBoardTracker:
    def __init__(self, folder: Path):
        self.folder = Path(folder) / "tensorboard"

    def log_run(self, label: str, run_dir: Path, params: dict[str, Any], summary: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(self.folder / label))
        try:
            for step, tag, value in run_series(run_dir):
                writer.add_scalar(tag, value, step)
            finals = final_scalars(summary)
            for tag, value in finals.items():
                writer.add_scalar(tag, value, int(summary.get("steps", 0)))
            hparams = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in params.items()}
            if hparams:
                writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in finals.items()}, run_name=".")
        finally:
            writer.close()


class MLflowTracker:
    """MLflow's local file store `<folder>/mlruns` (view with `mlflow ui --backend-store-uri <that dir>`),
    or wherever $MLFLOW_TRACKING_URI points (a database, a tracking server)."""

    def __init__(self, folder: Path, experiment: str):
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or (Path(folder) / "mlruns").resolve().as_uri()
        # MLflow 3 refuses new file stores unless asked: a local folder is what a one-machine user wants
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.experiment = experiment

    def log_run(self, label: str, run_dir: Path, params: dict[str, Any], summary: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.uri)
        found = client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(self.experiment)
        run = client.create_run(experiment_id, run_name=label, tags={"tunelab.run_dir": str(run_dir)})
        stamp = int(time.time() * 1000)
        metrics = [Metric(tag.replace("/", "."), value, stamp, step) for step, tag, value in run_series(run_dir)]
        metrics += [Metric(tag.replace("/", "."), value, stamp, int(summary.get("steps", 0)))
                    for tag, value in final_scalars(summary).items()]
        client.log_batch(run.info.run_id, metrics=metrics,
                         params=[Param(k, str(v)[:500]) for k, v in params.items()])
        client.set_terminated(run.info.run_id)


def open_tracker(name: str | None, folder: Path, experiment: str = "tunelab") -> Tracker | None:
    """The tracker for `--tracker NAME`, or a one-line error naming the pip package when it is missing."""
    if not name:
        return None
    if name not in TRACKERS:
        raise TunelabError(f"--tracker {name}: choose {' or '.join(TRACKERS)}")
    import importlib.util

    module, package = TRACKERS[name]
    if importlib.util.find_spec(module) is None:
        raise TunelabError(f"--tracker {name} needs the {module} package: pip install {package}")
    if name == "tensorboard":
        return TensorBoardTracker(folder)
    return MLflowTracker(folder, experiment)


def export_runs(name: str | None, folder: Path, outcomes, experiment: str = "tunelab") -> None:
    """Copy finished runs (RunOutcome list) into a tracker, e.g. after `tunelab run`."""
    tracker = open_tracker(name, folder, experiment)
    if tracker is None:
        return
    for outcome in outcomes:
        tracker.log_run(outcome.label, outcome.run_dir, {}, outcome.summary)
