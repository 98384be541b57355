"""`tunelab run RECIPE --nproc N`: the same command under torchrun, N processes on this machine.

A thin wrapper: it checks the recipe once (a config error stays one line, not N), splits the CPU
threads between the processes, and starts `python -m torch.distributed.run --standalone
--nproc-per-node N -m tunelab run RECIPE ...`. Several machines use torchrun (or `accelerate launch`)
directly with a rendezvous endpoint; docs/scale-out.md shows both.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from tunelab.errors import TunelabError


def torchrun_command(nproc: int, recipe: str, overrides: list[str], resume: str | None) -> list[str]:
    run = ["-m", "tunelab", "run", recipe, *overrides, *(["--resume", resume] if resume else [])]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *run]


def launch_env(nproc: int) -> dict[str, str]:
    """Each process gets cpu_count / N threads unless OMP_NUM_THREADS is set (torchrun would give 1)."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return env


def launch_run(nproc: int, recipe: str, overrides: list[str], resume: str | None) -> int:
    from tunelab.recipes import load_recipe

    if nproc < 1:
        raise TunelabError(f"--nproc: {nproc} is not a process count (use 1 or more)")
    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise TunelabError(f"--nproc: {nproc} processes but this machine has {torch.cuda.device_count()} GPUs "
                           "(one process per GPU)")
    load_recipe(recipe, overrides)  # a bad recipe is one line here, before N processes start
    code = subprocess.call(torchrun_command(nproc, recipe, overrides, resume), env=launch_env(nproc))
    if code != 0:
        raise TunelabError(f"--nproc {nproc}: a process exited with code {code} (its message is above)")
    return 0
