"""tunelab DPO vs TRL DPOTrainer + PEFT LoRA on SmolLM2-135M-Instruct, side by side in one run.

Workload (the peer's, ../shared/peers/bench/trl_dpo.py): HH-RLHF pairs in conversational form, LoRA r16
alpha 32 dropout 0.05 on all seven projections, 4 pairs per optimizer step, max length 256, lr 5e-5, β 0.1,
2 threads, fp32 on both sides. Wall time includes the reference pass on both sides. Peers: TRL default
(reference log-probs recomputed every step with the adapter disabled) and tuned (`--precompute_ref 1`:
one reference pass before training). tunelab: reference log-probs once per pair, taken as a pair is
first trained on (a 6-step run pays for the 24 pairs it uses, the peer's precompute for all `--n`), prompt
shared by both replies, micro-batches of `--micro` pairs accumulated to 4. Both load the same converted
safetensors folder of the model. Every side runs as its own subprocess, so peak RSS is
each one's own. Also prints the machine's fp32 matmul rate and each loop's share of it
(≈ 4·N·tokens FLOPs for a frozen-base step: forward 2N, input gradients 2N per token).

    python benchmarks/bench_dpo.py                      # default peer, tuned peer, tunelab
    python benchmarks/bench_dpo.py --steps 6 --n 64
Needs ../shared (peer script, HH-RLHF) and TRL: `pip install --no-deps --target /tmp/trlpkgs trl==1.16.0`
(then TRL_PATH=/tmp/trlpkgs), or trl installed in the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT.parent / "shared" / "peers" / "bench"
SMOL_PARAMS = 134_515_008  # SmolLM2-135M without the tied head counted twice


def result_line(stdout: str) -> dict:
    return json.loads(next(x for x in stdout.splitlines() if x.startswith("RESULT "))[len("RESULT "):])


def child_env(model_dir: Path) -> dict:
    env = {**os.environ, "SMOL_DIR": str(model_dir), "TUNELAB_QUIET": "1"}
    extra = os.environ.get("TRL_PATH", "/tmp/trlpkgs")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), extra, env.get("PYTHONPATH", "")) if p)
    return env


def run_peer(model_dir: Path, n: int, steps: int, precompute: bool) -> dict:
    out = subprocess.run([sys.executable, str(PEERS / "trl_dpo.py"), "--n", str(n), "--steps", str(steps),
                          "--bs", "4", "--max_length", "256", "--precompute_ref", "1" if precompute else "0"],
                         capture_output=True, text=True, env=child_env(model_dir))
    if out.returncode:
        raise SystemExit(f"peer failed:\n{out.stderr[-3000:]}")
    return result_line(out.stdout)


def run_ours_subprocess(model_dir: Path, n: int, steps: int, micro: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--ours", "--n", str(n), "--steps", str(steps),
                          "--micro", str(micro)], capture_output=True, text=True, env=child_env(model_dir))
    if out.returncode:
        raise SystemExit(f"tunelab failed:\n{out.stderr[-3000:]}")
    return result_line(out.stdout)


def ours(n: int, steps: int, micro: int) -> None:
    """Child process: the peer's pairs through tunelab's DPO task."""
    import time

    sys.path.insert(0, str(PEERS))
    import common  # the peer's own loader, so both sides see identical pairs

    from tunelab.recipes import validate
    from tunelab.runner import run_recipe

    rows, _ = common.load_pref(n)
    folder = Path(tempfile.mkdtemp())
    data = folder / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    # Cold token and reference caches, so the reference pass is timed; the model is the converted
    # safetensors folder the peer loads too (the GGUF conversion is a one-off per machine, not per run).
    os.environ["TUNELAB_CACHE"] = str(folder / "cache")
    config = validate({
        "name": "bench_dpo", "task": "dpo", "output_dir": str(folder / "runs"),
        "model": {"name": os.environ["SMOL_DIR"], "max_length": 256},
        "data": {"train": str(data), "eval": str(data), "eval_limit": 4},
        "adapter": {"variant": "lora", "rank": 16, "alpha": 32, "dropout": 0.05,
                    "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
        "train": {"lr": 5e-5, "max_steps": steps, "batch_size": micro, "grad_accum": 4 // micro,
                  "precision": "fp32", "threads": 2, "warmup_ratio": 0.0, "log_every": 1},
        "preference": {"beta": 0.1},
    })
    started = time.perf_counter()
    summary = run_recipe(config)[0].summary
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({
        "pairs_per_s": round(steps * 4 / summary["train_seconds"], 3), "train_s": summary["train_seconds"],
        "wall_s": round(wall, 1), "tokens_per_s": summary["tokens_per_s"], "peak_rss_mb": round(peak, 1),
        "reward_accuracy": summary["metrics"]["reward_accuracy"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="pairs read (the reference pass covers all of them)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--micro", type=int, default=1, choices=[1, 2, 4])
    parser.add_argument("--ours", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours:
        ours(args.n, args.steps, args.micro)
        return
    import torch

    sys.path.insert(0, str(ROOT))
    from benchmarks.machine import matmul_gflops, vector_extensions
    from tunelab.assets.models import resolve_model

    torch.set_num_threads(2)
    peak_gflops = matmul_gflops(torch.float32)
    print(f"CPU: {vector_extensions()}; fp32 matmul {peak_gflops:.0f} GFLOP/s on 2 threads", flush=True)
    model_dir = resolve_model("smollm2-135m").path
    results = {"TRL default": run_peer(model_dir, args.n, args.steps, False),
               "TRL tuned (precompute_ref)": run_peer(model_dir, args.n, args.steps, True),
               f"tunelab (micro {args.micro})": run_ours_subprocess(model_dir, args.n, args.steps, args.micro)}
    for r in results.values():  # the peer times its precompute (setup_s) outside train_s: count it
        r["wall_train_s"] = r["train_s"] + r.get("setup_s", 0.0)
        r["pairs_per_s"] = round(4 * args.steps / r["wall_train_s"], 3)
    for name, r in results.items():
        share = 4 * SMOL_PARAMS * r["tokens_per_s"] / 1e9 / peak_gflops if r.get("tokens_per_s") else float("nan")
        print(f"{name}: {r['pairs_per_s']} pairs/s, train + reference {r['wall_train_s']:.1f} s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"{r.get('tokens_per_s')} tokens/s (~{share:.0%} of matmul peak)", flush=True)
    mine, tuned = results[f"tunelab (micro {args.micro})"], results["TRL tuned (precompute_ref)"]
    print(f"tunelab vs tuned TRL: {mine['pairs_per_s'] / tuned['pairs_per_s']:.2f}x pairs/s, "
          f"{mine['peak_rss_mb'] / tuned['peak_rss_mb']:.2f}x peak RSS")
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
