"""`tunelab sweep --workers N [--devices 0,1 | cpu]`: N worker processes of one sweep on this machine.

Each worker is the plain `tunelab sweep` command (same recipe, space and storage, hence the same study),
so local workers share trials exactly as workers on several machines do (tunelab/trials/study.py).
What the launcher adds is each worker's environment:

- `--devices 0,1`: worker k sees only GPU devices[k % len(devices)] through CUDA_VISIBLE_DEVICES, so it
  trains on its own card (more workers than devices share cards round-robin). Indices are the ones this
  process sees: under CUDA_VISIBLE_DEVICES=2,3, `--devices 0` is physical GPU 2.
- `--devices cpu`, or `--workers N` alone on a machine without CUDA: every worker runs on CPU with
  CUDA_VISIBLE_DEVICES empty and OMP/MKL threads = cores // N, so N workers do not oversubscribe the cores
  (a recipe's own `train.threads` still wins inside its worker).
- `--workers N` alone with CUDA: round-robin over every visible GPU.

A device that is not there is one error line before anything starts. Each worker prints its trials and
one summary line; the launcher, once all are done, prints the sweep's table and writes its comparison.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from tunelab.errors import TunelabError

WORKER_VARIABLE = "TUNELAB_SWEEP_WORKER"  # set in each launched worker: it prints one line, the launcher the tables


@dataclass(frozen=True)
class WorkerPlan:
    """One worker: its number, the device it trains on ("cpu" or a CUDA index) and the variables it gets."""

    index: int
    device: str
    env: dict[str, str]


def parse_devices(text: str) -> list[str]:
    """'0,1' -> ['0', '1']; 'cpu' -> ['cpu']. Mixed, negative, repeated or empty entries are errors."""
    items = [item.strip() for item in text.split(",")]
    if items == ["cpu"]:
        return items
    if not all(item.isdigit() for item in items):
        raise TunelabError(f"--devices {text}: give CUDA device indices (0,1) or cpu")
    if len(set(items)) != len(items):
        raise TunelabError(f"--devices {text}: a device is listed twice (two workers on one GPU: "
                           "--workers 2 --devices 0)")
    return [str(int(item)) for item in items]


def usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def plan_workers(workers: int | None, devices: str | None, cuda_count: int, cores: int,
                 visible: str | None = None) -> list[WorkerPlan]:
    """Which device and environment each worker gets; `cuda_count` and `visible` (this process's
    CUDA_VISIBLE_DEVICES) describe the GPUs this process sees."""
    if workers is not None and workers < 1:
        raise TunelabError(f"--workers {workers}: must be at least 1")
    if devices is not None:
        chosen = parse_devices(devices)
    else:
        chosen = [str(i) for i in range(cuda_count)] or ["cpu"]
    missing = [d for d in chosen if d != "cpu" and int(d) >= cuda_count]
    if missing:
        seen = f"{cuda_count} CUDA device(s) visible" if cuda_count else "no CUDA device visible"
        raise TunelabError(f"--devices {devices}: device {missing[0]} is not on this machine ({seen}); "
                           "use --devices cpu, or --workers N alone")
    count = workers or len(chosen)
    threads = str(max(1, cores // count))
    physical = [v.strip() for v in visible.split(",")] if visible else None
    plans = []
    for index in range(count):
        device = chosen[index % len(chosen)]
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, WORKER_VARIABLE: str(index)}
        if device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU worker never takes a GPU
        else:
            env["CUDA_VISIBLE_DEVICES"] = physical[int(device)] if physical else device
        plans.append(WorkerPlan(index, device, env))
    return plans


def cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launch(argv: list[str], plans: list[WorkerPlan]) -> list[int]:
    """Start one `argv` process per plan with its variables, wait for all; returns their exit codes.

    On Ctrl-C (or any error here) workers still running are stopped: a stopped worker's trial is
    recovered by the next `tunelab sweep` of the same sweep, as after any crash."""
    processes = []
    try:
        for plan in plans:
            processes.append(subprocess.Popen(argv, env={**os.environ, **plan.env}))
        return [process.wait() for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
