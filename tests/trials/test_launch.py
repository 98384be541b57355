"""`tunelab sweep --workers N --devices ...`: which device, CUDA_VISIBLE_DEVICES and thread count each
worker gets, the one-line error for a device that is not there, and two local CPU workers sharing one
sweep for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from tests.trials.sweep_workers import finished_once, sweep_command, sweep_folder
from tunelab.errors import TunelabError
from tunelab.trials.launch import WorkerPlan, launch, plan_workers, usable_cores

# (workers, devices, CUDA devices seen, cores, parent CUDA_VISIBLE_DEVICES) -> per worker (device, CVD, threads)
PLANS = [
    (2, None, 0, 2, None, [("cpu", "", "1"), ("cpu", "", "1")]),  # --workers alone, no GPU: CPU, cores split
    (3, "cpu", 2, 8, None, [("cpu", "", "2")] * 3),  # cpu asked for even with GPUs; 8 // 3 threads
    (None, "0,1", 2, 16, None, [("0", "0", "8"), ("1", "1", "8")]),  # one worker per listed device
    (3, "0,1", 2, 6, None, [("0", "0", "2"), ("1", "1", "2"), ("0", "0", "2")]),  # round-robin
    (None, None, 2, 4, None, [("0", "0", "2"), ("1", "1", "2")]),  # no flags but GPUs: every visible GPU
    (None, "1", 2, 4, "4,7", [("1", "7", "4")]),  # index as this process sees it -> the physical GPU
    (1, None, 0, 1, None, [("cpu", "", "1")]),
]


@pytest.mark.parametrize(("workers", "devices", "cuda", "cores", "visible", "expected"), PLANS)
def test_each_worker_gets_its_device_and_threads(workers, devices, cuda, cores, visible, expected):
    plans = plan_workers(workers, devices, cuda, cores, visible)
    assert [p.index for p in plans] == list(range(len(expected)))
    got = [(p.device, p.env["CUDA_VISIBLE_DEVICES"], p.env["OMP_NUM_THREADS"]) for p in plans]
    assert got == expected
    assert all(p.env["MKL_NUM_THREADS"] == p.env["OMP_NUM_THREADS"] for p in plans)


@pytest.mark.parametrize(("workers", "devices", "cuda", "message"), [
    (None, "0,1", 0, "--devices 0,1: device 0 is not on this machine (no CUDA device visible)"),
    (None, "0,2", 2, "device 2 is not on this machine (2 CUDA device(s) visible)"),
    (0, None, 0, "--workers 0: must be at least 1"),
    (None, "0,cpu", 2, "give CUDA device indices (0,1) or cpu"),
    (None, "1,1", 2, "a device is listed twice"),
    (None, "", 2, "give CUDA device indices"),
])
def test_bad_workers_or_devices(workers, devices, cuda, message):
    with pytest.raises(TunelabError) as error:
        plan_workers(workers, devices, cuda, 4)
    assert message in str(error.value)


def test_launch_gives_each_process_its_environment(tmp_path):
    script = ("import json, os, sys; keys = ('CUDA_VISIBLE_DEVICES', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS');"
              "open(os.path.join(sys.argv[1], str(os.getpid())), 'w').write(json.dumps({k: os.environ.get(k) "
              "for k in keys}))")
    plans = [WorkerPlan(0, "0", {"CUDA_VISIBLE_DEVICES": "0", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}),
             WorkerPlan(1, "cpu", {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})]
    assert launch([sys.executable, "-c", script, str(tmp_path)], plans) == [0, 0]
    seen = sorted((json.loads(p.read_text()) for p in tmp_path.iterdir()), key=lambda e: e["OMP_NUM_THREADS"])
    assert seen == [plans[1].env, plans[0].env]


def test_missing_gpu_is_one_error_line_before_anything_starts(tmp_path):
    command = [sys.executable, "-m", "tunelab", "sweep", "configs/demo.yaml", f"output_dir={tmp_path / 'runs'}",
               "--devices", "0,1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})  # no GPU, even on a GPU machine
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["tunelab: error: --devices 0,1: device 0 is not on this machine "
                                          "(no CUDA device visible); use --devices cpu, or --workers N alone"]
    assert not (tmp_path / "runs").exists()


def test_two_local_cpu_workers_share_one_sweep(tmp_path):
    steps = [12, 12, 3, 3]  # the first two trials are long enough that both workers are up to claim one
    command = [*sweep_command(tmp_path, "--grid", f"train.max_steps={steps}", "--workers", "2")]
    command[1:3] = ["-m", "tunelab"]  # the main CLI, as a user types it
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    threads = max(1, usable_cores() // 2)
    for index in (0, 1):
        assert f"worker {index}: cpu, {threads} thread(s)" in result.stdout
    folder = sweep_folder(tmp_path)
    events = finished_once(folder, steps)
    trained_by = Counter(e["worker"].rsplit(":", 1)[1] for e in events if e["event"] == "finish")
    assert len(trained_by) == 2 and str(os.getpid()) not in trained_by  # two child workers did the training
    ran = [int(line.split("this worker ran ")[1]) for line in result.stdout.splitlines() if "this worker ran" in line]
    assert sorted(ran) == sorted([*trained_by.values(), 0])  # each child's count, then the summary pass: 0
    assert "4 trials, 4 complete; this worker ran 0" in result.stdout
