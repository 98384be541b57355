"""SIGKILL at 20 random moments of one run (start-up, training steps, checkpoint writes, periodic and final
evaluation, artifact and summary writing), each time resumed with --resume: after every kill the run folder
is readable (no half-written file under a final name), and the run that finally finishes has the same
metrics and weights as one that was never interrupted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from safetensors.torch import load_file

KILLS = 20
VERSE = "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n" * 20
OVERRIDES = ["data.dataset=null", "model.arch={type: gpt, n_layer: 1, n_head: 2, n_embd: 32, block_size: 16}",
             "train.batch_size=16", "train.max_steps=300", "train.eval_every=50", "train.checkpoint_every=10",
             "train.warmup_ratio=0.0", "train.threads=1", "train.log_every=1", "lm.eval_windows=32", "lm.samples=1",
             "lm.sample_tokens=20"]


def command(tmp: Path, name: str, resume: Path | None = None) -> list[str]:
    args = [sys.executable, "-m", "tunelab", "run", "configs/shakespeare_char_nanogpt.yaml", *OVERRIDES,
            f"data.train={tmp / 'verse.txt'}", f"output_dir={tmp / 'runs'}", f"name={name}"]
    return args + (["--resume", str(resume)] if resume else [])


def env() -> dict:
    return {**os.environ, "TUNELAB_QUIET": "1", "OMP_NUM_THREADS": "1"}


def check_readable(run_dir: Path) -> None:
    """Every file under its final name is complete: JSON/YAML parse, safetensors load, metrics lines parse
    (a torn last line is tolerated by the reader, but no complete line is ever corrupt)."""
    for path in run_dir.rglob("*"):
        if not path.is_file() or ".tmp" in path.name:
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(str(path))
        elif path.name == "metrics.jsonl":
            lines = path.read_text().splitlines()
            for line in lines[:-1]:
                json.loads(line)


def logged_step(folder: Path) -> int:
    """The last step in the run's metrics.jsonl (0 before the first)."""
    paths = list(folder.glob("*/metrics.jsonl")) if folder.exists() else []
    steps = [0]
    for line in paths[0].read_text().splitlines() if paths else []:
        try:
            steps.append(int(json.loads(line).get("step", 0)))
        except json.JSONDecodeError:
            pass
    return max(steps)


def kill_plan(rng: random.Random) -> list[tuple[str, float]]:
    """Where the 20 kills land: 3 during start-up, 13 at random training steps in increasing order (just
    before, during or after a checkpoint write or a periodic evaluation), 4 after the last step (final
    evaluation, artifact, samples, summary), so the run makes progress between kills."""
    steps = sorted(rng.sample(range(2, 300), 13))
    return ([("startup", rng.uniform(0.2, 1.5)) for _ in range(3)] + [("step", s) for s in steps]
            + [("final", rng.uniform(0.0, 0.15)) for _ in range(KILLS - 16)])


def kill_at(proc: subprocess.Popen, folder: Path, where: tuple[str, float], rng: random.Random) -> None:
    kind, value = where
    if kind == "startup":
        time.sleep(value)
    else:
        target = 300 if kind == "final" else value
        deadline = time.perf_counter() + 60
        while logged_step(folder) < target and proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.002)
        time.sleep(value if kind == "final" else rng.uniform(0.0, 0.02))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_twenty_kills_then_resume_match_an_uninterrupted_run(tmp_path):
    (tmp_path / "verse.txt").write_text(VERSE)
    subprocess.run(command(tmp_path, "straight"), check=True, env=env(), capture_output=True)
    (straight,) = (tmp_path / "runs" / "straight").iterdir()
    rng = random.Random(0)
    run_dir: Path | None = None
    reached, kills = [], 0
    for where in kill_plan(rng):
        kills += 1
        proc = subprocess.Popen(command(tmp_path, "killed", run_dir), env=env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        kill_at(proc, tmp_path / "runs" / "killed", where, rng)
        folders = list((tmp_path / "runs" / "killed").glob("*")) if (tmp_path / "runs" / "killed").exists() else []
        assert len(folders) <= 1  # a resume never starts a second run folder
        if folders:
            run_dir = folders[0]
            check_readable(run_dir)
            position = run_dir / "checkpoints" / "last" / "position.json"
            reached.append(json.loads(position.read_text())["step"] if position.exists() else 0)
            if (run_dir / "summary.json").exists():
                break  # it finished before this kill landed
    assert kills >= 17 and len(set(reached)) >= 8  # the kills landed at many points of the run
    final = subprocess.run(command(tmp_path, "killed", run_dir), env=env(), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-2000:]
    run_dir = run_dir or next((tmp_path / "runs" / "killed").iterdir())
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (run_dir, straight))
    assert ours["metrics"] == theirs["metrics"] and ours["steps"] == theirs["steps"] == 300
    a, b = (load_file(str(d / "artifact" / "model.safetensors")) for d in (run_dir, straight))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == sorted(set(steps))  # no step logged twice after the replays
