"""Char-level GPT on tiny Shakespeare: nanoGPT's train.py (its CPU recipe) and tunelab, one after the other
on the same machine, threads and train/val split.

    python benchmarks/bench_charlm.py [--nanogpt ../shared/peers/nanoGPT] [--threads 2]
                                      [--recipe configs/shakespeare_char.yaml]

1. nanoGPT: its data files (train.bin, val.bin, meta.pkl) are written from tunelab's vendored text with
   its prepare.py's split (first 90% / last 10%, vocabulary of the whole text); its train.py runs with
   the README's CPU command (4 layers, 4 heads, 128 dims, block 64, batch 12, 2,000 iterations, no dropout,
   eval_iters 20) plus always_save_checkpoint, so its final weights are on disk. Wall time T: from its first
   output line (imports done) to its exit. Its final checkpoint is then evaluated on tunelab's fixed val
   windows (the same windows for both), next to its own 20-batch estimate.
2. tunelab: the recipe, with max_steps fitted to T from a short timed probe (its cosine schedule then ends
   at nanoGPT's wall time, as a user with that budget would set it), periodic evaluations timed through
   run_recipe's on_eval hook from the start of run_recipe (data, model and evaluations included).
Printed: both val losses at T, tunelab's time to nanoGPT's final loss and its ratio to T, the machine's
fp32 matmul GFLOP/s at these threads and the share of it the loop achieves (6N + 12·L·T·d FLOPs per token).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tunelab.data.char_tokenizer import CharTokenizer  # noqa: E402
from tunelab.recipes import load_recipe  # noqa: E402
from tunelab.runner import run_recipe  # noqa: E402
from tunelab.tasks.lm import LMTask  # noqa: E402

TEXT = ROOT / "tunelab" / "data" / "vendored" / "tinyshakespeare.txt.gz"
NANOGPT_CPU = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
               "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
               "--lr_decay_iters=2000", "--dropout=0.0", "--always_save_checkpoint=True"]


def matmul_gflops(threads: int, n: int = 1024, seconds: float = 2.0) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - started) / 1e9


def prepare_nanogpt_data(work: Path, nanogpt: Path) -> None:
    """nanoGPT's data/shakespeare_char/{train,val}.bin + meta.pkl from the same text, split as prepare.py."""
    text = gzip.open(TEXT, "rt", encoding="utf-8").read()
    tokenizer = CharTokenizer.from_text(text)
    n = len(text)
    folder = work / "data" / "shakespeare_char"
    folder.mkdir(parents=True)
    tokenizer.encode(text[: int(n * 0.9)]).astype(np.uint16).tofile(folder / "train.bin")
    tokenizer.encode(text[int(n * 0.9):]).astype(np.uint16).tofile(folder / "val.bin")
    symbols = tokenizer.symbols
    meta = {"vocab_size": len(symbols), "itos": dict(enumerate(symbols)), "stoi": {c: i for i, c in enumerate(symbols)}}
    (folder / "meta.pkl").write_bytes(pickle.dumps(meta))
    (work / "configurator.py").symlink_to(nanogpt / "configurator.py")  # train.py execs it from the cwd


def run_nanogpt(nanogpt: Path, threads: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-nanogpt-"))
    prepare_nanogpt_data(work, nanogpt)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, str(nanogpt / "train.py"), str(nanogpt / "config" / "train_shakespeare_char.py"),
               *NANOGPT_CPU, f"--out_dir={work / 'out'}"]
    proc = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first, evals, lines = None, [], []
    for line in proc.stdout:
        now = time.perf_counter()
        first = first or now
        lines.append(line)
        if line.startswith("step ") and "val loss" in line:
            evals.append((now - first, int(line.split()[1].rstrip(":")), float(line.rsplit("val loss", 1)[1])))
    proc.wait()
    wall = time.perf_counter() - first
    if proc.returncode:
        raise SystemExit("nanoGPT failed:\n" + "".join(lines[-20:]))
    return {"wall": wall, "evals": evals, "ckpt": work / "out" / "ckpt.pt", "nanogpt": nanogpt}


def nanogpt_model(nanogpt: Path, ckpt_path: Path) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("nanogpt_model", nanogpt / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)  # written by the run above
    model = module.GPT(module.GPTConfig(**ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])
    return model.eval()


def tunelab_config(recipe: str, threads: int, steps: int, overrides: list[str]):
    eval_every = max(1, steps // 20)
    return load_recipe(recipe, [f"train.threads={threads}", f"train.max_steps={steps}",
                                f"train.eval_every={eval_every}", "lm.eval_windows=240", "lm.samples=0",
                                f"output_dir={tempfile.mkdtemp(prefix='bench-tunelab-')}", *overrides])


def run_tunelab(recipe: str, threads: int, budget: float, overrides: list[str]) -> dict:
    probe_steps = 40
    started = time.perf_counter()
    probe = run_recipe(tunelab_config(recipe, threads, probe_steps, overrides))[0].summary
    probe_wall = time.perf_counter() - started
    per_step = probe["train_seconds"] / probe_steps
    fixed = probe_wall - probe["train_seconds"]  # setup + evaluations at this eval cadence
    steps = max(probe_steps, int((budget - fixed) / per_step * 0.97)) // 20 * 20  # 20 evals, one at the end
    config = tunelab_config(recipe, threads, steps, overrides)
    evals: list[tuple[float, int, float]] = []
    started = time.perf_counter()

    def stamp(step: int, metrics: dict) -> bool:
        evals.append((time.perf_counter() - started, step, float(metrics["eval_loss"])))
        return False

    outcome = run_recipe(config, on_eval=stamp)[0]
    wall = time.perf_counter() - started
    return {"wall": wall, "evals": evals, "summary": outcome.summary, "config": config, "steps": steps}


def flops_per_token(config) -> float:
    """Training FLOPs per token: 6N for the weights' forward + backward, 12·L·T·d for attention scores."""
    arch = config.model.arch
    n_layer, d, block = arch.get("n_layer", 4), arch.get("n_embd", 128), arch.get("block_size", 64)
    task = LMTask(config)
    task.prepare_data(None, "", None)
    from tunelab.models.scratch import build_scratch_model

    params = sum(p.numel() for p in build_scratch_model(arch, task.tokenizer.vocab_size).parameters())
    return 6 * params + 12 * n_layer * block * d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nanogpt", default=str(ROOT.parent / "shared" / "peers" / "nanoGPT"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recipe", default=str(ROOT / "configs" / "shakespeare_char.yaml"))
    parser.add_argument("overrides", nargs="*", help="dotted overrides for the tunelab recipe")
    args = parser.parse_args()
    os.environ.setdefault("TUNELAB_QUIET", "1")
    torch.set_num_threads(args.threads)
    peak = matmul_gflops(args.threads)
    print(f"fp32 matmul (1024², {args.threads} threads): {peak:.1f} GFLOP/s", flush=True)

    nano = run_nanogpt(Path(args.nanogpt), args.threads)
    print(f"nanoGPT: {nano['wall']:.1f} s; its own val estimates: "
          + ", ".join(f"{s}: {v:.4f} @ {t:.0f}s" for t, s, v in nano["evals"]), flush=True)
    ours = run_tunelab(args.recipe, args.threads, nano["wall"], args.overrides)

    task = LMTask(ours["config"])
    task.prepare_data(None, "", None)
    torch.set_num_threads(args.threads)
    nano_final = task.mean_loss(nanogpt_model(nano["nanogpt"], nano["ckpt"]), task.eval_ids)
    at_budget = [v for t, _, v in ours["evals"] if t <= nano["wall"]]
    ours_at_t = at_budget[-1] if at_budget else float("nan")
    reached = [t for t, _, v in ours["evals"] if v <= nano_final]
    summary = ours["summary"]
    achieved = summary["tokens_per_s"] * flops_per_token(ours["config"]) / 1e9

    print(f"\nsame {len(task.fixed_starts(task.eval_ids))} fixed val windows for both:")
    print(f"  nanoGPT final val loss ({nano['wall']:.1f} s, 2000 iters): {nano_final:.4f}")
    print(f"  tunelab val loss at {nano['wall']:.1f} s ({ours['steps']} steps, ended at {ours['wall']:.1f} s): "
          f"{ours_at_t:.4f}  (difference {ours_at_t - nano_final:+.4f}; goal <= -0.15: "
          f"{'met' if ours_at_t <= nano_final - 0.15 else 'not met'})")
    if reached:
        ratio = reached[0] / nano["wall"]
        print(f"  tunelab reaches {nano_final:.4f} at {reached[0]:.1f} s = {ratio:.2f}x nanoGPT's time "
              f"(goal <= 0.5x: {'met' if ratio <= 0.5 else 'not met'}; first eval at or below it)")
    else:
        print(f"  tunelab does not reach {nano_final:.4f} within the run")
    print("  tunelab curve: " + ", ".join(f"{s}: {v:.3f} @ {t:.0f}s" for t, s, v in ours["evals"]))
    print(f"  tunelab loop: {summary['tokens_per_s']:.0f} tokens/s, {achieved:.1f} GFLOP/s = "
          f"{achieved / peak:.0%} of the measured matmul rate")


if __name__ == "__main__":
    main()
