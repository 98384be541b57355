"""Trackers copy a finished run dir into TensorBoard event files or MLflow's local file store; the
values are read back with each tool's own reader. Both packages are in the [dev] extra, so these run
(not skip) wherever `make test` installed tunelab."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tunelab.errors import TunelabError
from tunelab.trials import trackers
from tunelab.trials.trackers import export_runs, open_tracker

SUMMARY = {"metrics": {"accuracy": 0.5}, "steps": 2, "trainable_params": 10}


def fake_run(folder: Path) -> Path:
    """A finished run dir with two logged steps and one eval, as the loop writes them."""
    run_dir = folder / "run"
    run_dir.mkdir()
    lines = [{"step": 1, "loss": 1.2, "lr": 1e-3}, {"step": 2, "loss": 1.0, "lr": 1e-3},
             {"step": 2, "eval": {"accuracy": 0.5}}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run_dir / "summary.json").write_text(json.dumps(SUMMARY))
    return run_dir


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, round(e.value, 6)) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_tracker_logs_the_curves_and_final_metrics(tmp_path):
    open_tracker("tensorboard", tmp_path).log_run("t0", fake_run(tmp_path), {"train.lr": 1e-3}, SUMMARY)
    scalars = tensorboard_scalars(tmp_path / "tensorboard" / "t0")
    assert scalars["train/loss"] == [(1, 1.2), (2, 1.0)] and scalars["train/lr"] == [(1, 0.001), (2, 0.001)]
    assert scalars["eval/accuracy"] == [(2, 0.5)] and scalars["final/accuracy"] == [(2, 0.5)]
    assert scalars["run/trainable_params"] == [(2, 10.0)]
    assert "hparam/final/accuracy" in scalars  # the hparams table links the trial's params to its result


def test_mlflow_tracker_logs_params_metric_history_and_the_run_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the tracker opts in itself (restored after)
    run_dir = fake_run(tmp_path)
    open_tracker("mlflow", tmp_path, "exp").log_run("t0", run_dir, {"train.lr": 1e-3}, SUMMARY)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert run.info.run_name == "t0" and run.info.status == "FINISHED"
    assert run.data.params == {"train.lr": "0.001"} and run.data.tags["tunelab.run_dir"] == str(run_dir)
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train.loss")]
    assert history == [(1, 1.2), (2, 1.0)]
    assert run.data.metrics["eval.accuracy"] == 0.5 and run.data.metrics["final.accuracy"] == 0.5


def test_export_runs_writes_one_tensorboard_run_per_outcome(tmp_path):
    outcomes = []
    for label in ("lora", "dora"):
        (tmp_path / label).mkdir()
        outcomes.append(SimpleNamespace(label=label, run_dir=fake_run(tmp_path / label), summary=SUMMARY))
    export_runs("tensorboard", tmp_path, outcomes)
    assert sorted(p.name for p in (tmp_path / "tensorboard").iterdir()) == ["dora", "lora"]
    assert tensorboard_scalars(tmp_path / "tensorboard" / "dora")["train/loss"] == [(1, 1.2), (2, 1.0)]
    export_runs(None, tmp_path / "none", outcomes)  # no tracker asked for: nothing written
    assert not (tmp_path / "none").exists()


def test_missing_package_and_unknown_tracker_are_one_line(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name in {"tensorboard", "mlflow"} else real_find_spec(name, *args))
    with pytest.raises(TunelabError, match=r"^--tracker tensorboard needs the tensorboard package: pip install "
                                           r"tensorboard$"):
        open_tracker("tensorboard", tmp_path)
    with pytest.raises(TunelabError, match=r"^--tracker mlflow needs the mlflow package: pip install mlflow-skinny$"):
        open_tracker("mlflow", tmp_path)
    with pytest.raises(TunelabError, match="choose tensorboard or mlflow"):
        open_tracker("wandb", tmp_path)
    assert set(trackers.TRACKERS) == {"tensorboard", "mlflow"}
