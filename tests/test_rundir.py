import json
import os

import pytest

from tunelab.rundir import RunDir, atomic_write_json, atomic_write_with, read_jsonl


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "summary.json"
    atomic_write_json(target, {"ok": 1})

    def broken(tmp):
        tmp.write_text('{"half": ')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write_with(target, broken)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left behind


def test_run_dir_layout_and_metrics(tmp_path):
    run = RunDir.create(tmp_path, "demo", "r1")
    run.write_config({"name": "demo"}, seed=3)
    run.log({"step": 1, "loss": 2.0})
    run.log({"step": 2, "loss": 1.5})
    run.write_summary({"metrics": {"accuracy": 0.5}})
    assert run.path == tmp_path / "demo" / "r1"
    assert (run.path / "config.yaml").read_text().startswith("name: demo")
    env = json.loads((run.path / "environment.json").read_text())
    assert env["seed"] == 3 and "torch" in env["libraries"]
    assert [r["step"] for r in run.metrics()] == [1, 2]
    assert run.summary()["metrics"]["accuracy"] == 0.5


def test_torn_metrics_line_is_skipped_and_truncation_on_resume(tmp_path):
    run = RunDir.create(tmp_path, "x", "r")
    for step in range(1, 5):
        run.log({"step": step})
    with open(run.metrics_path, "a") as handle:
        handle.write('{"step": 5, "lo')  # process killed mid-line
    assert [r["step"] for r in read_jsonl(run.metrics_path)] == [1, 2, 3, 4]
    run.truncate_metrics(2)
    assert [r["step"] for r in run.metrics()] == [1, 2]
    assert not any(name.endswith(".tmp") for name in os.listdir(run.path))
