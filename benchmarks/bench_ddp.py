"""Two data-parallel processes against one, on this machine: what DDP costs when the processes share the
same cores (expect ≤ 1x on 2 cores: the same FLOPs, plus a gradient all-reduce per step and a second copy
of the model in memory). Same recipe, same global batch (batch_size x grad_accum), same steps, fp32.

- one process:   tunelab run RECIPE train.threads=2
- two processes: tunelab run RECIPE train.threads=1 --nproc 2   (torchrun, gloo; 1 thread each)

Rate = train_samples / train_seconds from rank 0's summary.json (start-up and evaluation excluded); the
matmul ceiling (fp32, 1024³) is measured in this process at 2 threads and at 1 thread.

    python benchmarks/bench_ddp.py
    python benchmarks/bench_ddp.py --only lm_char_gpt
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import matmul_gflops, vector_extensions  # noqa: E402

SHORT = ["train.eval_every=null", "train.checkpoint_every=null", "train.precision=fp32"]
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "classification_lora": ("configs/demo.yaml", [
        "variants={}", "data.limit=512", "data.eval_limit=64", "train.max_steps=16", "train.batch_size=16",
        "train.grad_accum=2", "model.max_length=128", "adapter.max_trainable=null", "adapter.plan=fixed"]),
    "lm_char_gpt": ("configs/shakespeare_char_nanogpt.yaml", [
        "train.max_steps=40", "train.grad_accum=2", "lm.eval_windows=16", "lm.samples=0"]),
}


def run(recipe: str, overrides: list[str], out: Path, nproc: int) -> dict:
    threads = 2 // nproc
    env = {**os.environ, "TUNELAB_QUIET": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    args = [sys.executable, "-m", "tunelab", "run", recipe, *overrides, *SHORT, f"train.threads={threads}",
            f"output_dir={out}", f"name=p{nproc}", *(["--nproc", str(nproc)] if nproc > 1 else [])]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{recipe} with {nproc} process(es) failed:\n{done.stderr[-2000:]}")
    (summary,) = list((out / f"p{nproc}").glob("*/summary.json"))
    return {**json.loads(summary.read_text()), "launch_wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=list(SETTINGS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    ceiling2 = matmul_gflops()
    torch.set_num_threads(1)
    ceiling1 = matmul_gflops()
    print(f"CPU vector extensions: {vector_extensions()}; {os.cpu_count()} cores")
    print(f"fp32 matmul: {ceiling2:.0f} GFLOP/s at 2 threads, {ceiling1:.0f} GFLOP/s at 1 thread (x2 = "
          f"{2 * ceiling1:.0f} for two processes)")
    print(f"{'setting':22} {'1 proc samples/s':>17} {'2 proc samples/s':>17} {'ratio':>6} "
          f"{'1 proc wall s':>13} {'2 proc wall s':>13} {'rank-0 RSS MB 1/2':>18}")
    for name in args.only:
        recipe, overrides = SETTINGS[name]
        with tempfile.TemporaryDirectory() as tmp:
            one = run(recipe, overrides, Path(tmp), 1)
            two = run(recipe, overrides, Path(tmp), 2)
        assert one["steps"] == two["steps"] and one["train_samples"] == two["train_samples"]
        ratio = two["samples_per_s"] / one["samples_per_s"]
        print(f"{name:22} {one['samples_per_s']:17.1f} {two['samples_per_s']:17.1f} {ratio:5.2f}x "
              f"{one['launch_wall_s']:13.1f} {two['launch_wall_s']:13.1f} "
              f"{one['peak_rss_mb']:8.0f} / {two['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    main()
