"""A full disk and a read-only run folder: `tunelab` stops with exit code 2 and one line naming the file and the
file system, never a traceback, and leaves the run folder as it was before the failed write.

How the disk fills: the run folder lives on a real size-limited file system (a tmpfs mounted with `size=`,
else a loop-mounted ext4 image; see `tests/reliability/mounts.py`), and the test fills it with a ballast
file while the training process is stopped (SIGSTOP) right after a chosen checkpoint, so the kernel's
ENOSPC hits the next write of that process: before the first write, at the next checkpoint (48 KiB left:
the metrics lines fit, the checkpoint does not), or after the last checkpoint (nothing left: the final
evaluation, artifact and summary writes). After the failure the previous `checkpoints/last` loads, no
temporary file or folder is left, and once the ballast is deleted `--resume` finishes with the same
metrics and weights as a run that never failed.

Read-only: the folder is a tmpfs remounted read-only (else `chattr +i`; root ignores chmod). Without root
both kinds of test are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.reliability.mounts import fill, read_only, size_limited
from tests.reliability.test_kill_resume import OVERRIDES, VERSE, check_readable

STEPS = 60
SHORT = [o for o in OVERRIDES if not o.startswith("train.max_steps=")] + [f"train.max_steps={STEPS}"]
DISK = 2 << 20  # 2 MiB: room for the run (about 400 KiB with a checkpoint being swapped) and the ballast


def command(tmp: Path, output_dir: Path, resume: Path | None = None) -> list[str]:
    args = [sys.executable, "-m", "tunelab", "run", "configs/shakespeare_char_nanogpt.yaml", *SHORT,
            f"data.train={tmp / 'verse.txt'}", f"output_dir={output_dir}", "name=disk"]
    return args + (["--resume", str(resume)] if resume else [])


def run_env(tmp: Path) -> dict:
    return {**os.environ, "TUNELAB_QUIET": "1", "OMP_NUM_THREADS": "1", "TUNELAB_CACHE": str(tmp / "cache")}


def cli(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=run_env(tmp), capture_output=True, text=True)


def the_one_line(result: subprocess.CompletedProcess) -> str:
    """Exit code 2, no traceback, and one error line, the last on stderr (the run's pre-flight summary of the
    data may come before it); returns the line."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("tunelab: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    return errors[0]


def checkpoint_step(runs: Path) -> int:
    paths = list(runs.glob("disk/*/checkpoints/last/position.json"))
    try:
        return json.loads(paths[0].read_text())["step"] if paths else 0
    except (OSError, ValueError):
        return 0  # being swapped in right now


def leftovers(run_dir: Path) -> list[Path]:
    """Temporary files/folders of the atomic writers (all hidden: `.name.xxx.tmp`, `.last.xxx`, `.last.old-`)."""
    return [p for p in run_dir.rglob(".*")]


def same_result(run_dir: Path, straight: Path) -> None:
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (run_dir, straight))
    assert ours["metrics"] == theirs["metrics"] and ours["steps"] == theirs["steps"] == STEPS
    a, b = (load_file(str(d / "artifact" / "model.safetensors")) for d in (run_dir, straight))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("disk")
    (tmp / "verse.txt").write_text(VERSE)
    return tmp


@pytest.fixture(scope="module")
def straight(work) -> Path:
    """The same run, never interrupted: what every recovered run must equal."""
    result = cli(command(work, work / "straight"), work)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (work / "straight" / "disk").iterdir()
    return run_dir


FULL_CASES = [  # (case, fill once the checkpoint of this step is on disk (None: before the start), bytes left free)
    ("before the first write", None, 0),
    ("at the next checkpoint write", 10, 48 << 10),
    ("after the last checkpoint (evaluation, artifact, summary)", STEPS, 0),
]


@pytest.mark.parametrize(("case", "at_step", "leave"), FULL_CASES, ids=[c[0] for c in FULL_CASES])
def test_disk_full_stops_with_one_line_and_resume_finishes(work, straight, tmp_path, case, at_step, leave):
    runs = tmp_path / "runs"
    with size_limited(runs, DISK):
        ballast = fill(runs, leave) if at_step is None else None
        err = tmp_path / "stderr.txt"
        with open(err, "w") as err_file:
            proc = subprocess.Popen(command(work, runs), env=run_env(work),
                                    stdout=subprocess.DEVNULL, stderr=err_file, text=True)
            stopped_at = 0
            if at_step is not None:
                deadline = time.perf_counter() + 300
                while (stopped_at := checkpoint_step(runs)) < at_step and proc.poll() is None:
                    assert time.perf_counter() < deadline
                    time.sleep(0.001)
                proc.send_signal(signal.SIGSTOP)
                stopped_at = checkpoint_step(runs)
                ballast = fill(runs, leave)
                proc.send_signal(signal.SIGCONT)
            proc.wait(timeout=300)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, "", err.read_text())
        line = the_one_line(result)
        assert line.startswith("tunelab: error: disk full writing ") and f"free space on {runs} or" in line, line
        folders = list((runs / "disk").iterdir())
        assert len(folders) == 1
        run_dir = folders[0]
        assert str(run_dir) in line  # the write that failed belongs to this run
        if at_step == 10:
            assert "checkpoints/last" in line
        elif at_step == STEPS:
            assert "checkpoints" not in line and not (run_dir / "summary.json").exists()
        check_readable(run_dir)  # no half-written file under a final name
        assert leftovers(run_dir) == []
        last = run_dir / "checkpoints" / "last"
        if at_step is not None:  # the checkpoint before the failure is whole and loadable
            assert json.loads((last / "position.json").read_text())["step"] == stopped_at >= at_step
            load_file(str(last / "trainable.safetensors"))
            torch.load(last / "state.pt", weights_only=True)
        else:
            assert not last.exists()
        ballast.unlink()  # free the space, then resume
        resumed = cli(command(work, runs, resume=run_dir), work)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        same_result(run_dir, straight)


def read_only_setup(kind: str, work: Path, straight: Path, folder: Path) -> tuple[list[str], Path]:
    """(command, the path the line must name) for one read-only case; fills `folder` beforehand."""
    folder.mkdir()
    if kind == "new run":
        return command(work, folder), folder / "disk"
    copy = folder / straight.name
    shutil.copytree(straight, copy)
    if kind == "resume":  # an interrupted run: its last checkpoint is there, its summary and artifact are not
        (copy / "summary.json").unlink()
        shutil.rmtree(copy / "artifact")
        return command(work, folder, resume=copy), copy
    return [sys.executable, "-m", "tunelab", "report", str(copy)], copy / "report.html"


RO_CASES = ["new run", "resume", "report"]


@pytest.mark.parametrize("kind", RO_CASES)
def test_read_only_run_folder_gives_one_line_naming_the_path(work, straight, tmp_path, kind):
    folder = tmp_path / "ro"
    args, named = read_only_setup(kind, work, straight, folder)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    with read_only(folder) as how:
        line = the_one_line(cli(args, work))
        assert str(named) in line, line
        reason = "read-only file system: cannot write" if how == "read-only tmpfs" else "permission denied writing"
        assert line.startswith(f"tunelab: error: {reason} "), line
        assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
