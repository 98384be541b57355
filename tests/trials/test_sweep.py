"""A real (tiny) sweep in-process: intermediate evals reach the pruner, an over-budget point ends as an
infeasible trial without training, a finished sweep run again does nothing, trackers fail in one line."""

import importlib.util
import json

import optuna
import pytest

from tunelab.errors import TunelabError
from tunelab.report.compare import build_comparison, markdown_table
from tunelab.report.runs import find_runs
from tunelab.trials import sweep as sweep_module
from tunelab.trials.space import parse_param
from tunelab.trials.spec import SweepSpec
from tunelab.trials.sweep import events, run_sweep
from tunelab.trials.trackers import open_tracker

TINY = ("variants={}", "data.limit=16", "data.eval_limit=16", "train.max_steps=3", "train.batch_size=8",
        "model.max_length=32", "adapter.plan=fixed", "train.threads=1", "train.log_every=1")


def test_pruning_and_infeasible_points(tmp_path, monkeypatch):
    # a pruner that always prunes at the first report: shows the on_eval -> trial.report wiring end to end
    monkeypatch.setattr(sweep_module, "make_pruner", lambda sweep: optuna.pruners.ThresholdPruner(lower=2.0))
    spec = SweepSpec("configs/demo.yaml", (*TINY, "adapter.max_trainable=20000", "train.eval_every=1"),
                     (parse_param("adapter.rank=[1,64]"),), root=str(tmp_path))
    result = run_sweep(spec)
    assert result.slots == 2 and result.ran == [0, 1] and result.states == {0: "PRUNED", 1: "INFEASIBLE"}
    pruned = json.loads((result.folder / "trial-000" / "summary.json").read_text())
    assert pruned["steps"] == 1 and pruned["stopped_early"]  # stopped at the first eval, not step 3
    assert json.loads((result.folder / "trial-000" / "trial.json").read_text())["state"] == "PRUNED"
    assert not (result.folder / "trial-001" / "summary.json").exists()  # rank 64 > budget: never trained
    study = optuna.load_study(study_name=result.study_name, storage=f"sqlite:///{result.folder / 'study.db'}")
    errors = [t.user_attrs.get("error", "") for t in study.trials]
    assert "max_trainable" in errors[1] and errors[0] == ""
    assert [e["event"] for e in events(result.folder)] == ["start", "finish", "start", "infeasible"]
    table = markdown_table(build_comparison(find_runs([str(result.folder)])))
    assert "trial-000 (pruned)" in table
    again = run_sweep(spec)  # the same command once more: everything is done, nothing is trained
    assert again.ran == [] and again.states == result.states and again.folder == result.folder


def fake_run(folder):
    """A finished run dir with two logged steps and one eval, as the loop writes them."""
    run_dir = folder / "run"
    run_dir.mkdir()
    lines = [{"step": 1, "loss": 1.2, "lr": 1e-3}, {"step": 2, "loss": 1.0, "lr": 1e-3},
             {"step": 2, "eval": {"accuracy": 0.5}}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run_dir / "summary.json").write_text(json.dumps({"metrics": {"accuracy": 0.5}, "steps": 2,
                                                       "trainable_params": 10}))
    return run_dir


def test_missing_tracker_package_is_one_line(tmp_path):
    for name in ("tensorboard", "mlflow"):
        if importlib.util.find_spec(name) is None:
            with pytest.raises(TunelabError, match=f"pip install {name}"):
                open_tracker(name, tmp_path)
    with pytest.raises(TunelabError, match="choose tensorboard or mlflow"):
        open_tracker("wandb", tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed (optional)")
def test_tensorboard_tracker_writes_event_files(tmp_path):
    run_dir = fake_run(tmp_path)
    open_tracker("tensorboard", tmp_path).log_run("t0", run_dir, {"train.lr": 1e-3}, json.loads(
        (run_dir / "summary.json").read_text()))
    assert list((tmp_path / "tensorboard" / "t0").rglob("events.out.tfevents.*"))


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed (optional)")
def test_mlflow_tracker_writes_a_local_file_store(tmp_path):
    run_dir = fake_run(tmp_path)
    open_tracker("mlflow", tmp_path, "exp").log_run("t0", run_dir, {"train.lr": 1e-3}, json.loads(
        (run_dir / "summary.json").read_text()))
    assert list((tmp_path / "mlruns").rglob("metrics/train.loss")) and list((tmp_path / "mlruns").rglob("train.lr"))
