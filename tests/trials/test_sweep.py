"""A real (tiny) sweep in-process: intermediate evals reach the pruner, an over-budget point ends as an
infeasible trial without training, a finished sweep run again does nothing (trackers: test_trackers.py)."""

import json

import optuna

from tunelab.report.compare import build_comparison, markdown_table
from tunelab.report.runs import find_runs
from tunelab.trials import sweep as sweep_module
from tunelab.trials.space import parse_param
from tunelab.trials.spec import SweepSpec
from tunelab.trials.sweep import events, run_sweep

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
