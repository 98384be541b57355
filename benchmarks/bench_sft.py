"""tunelab SFT vs TRL SFTTrainer + PEFT LoRA on SmolLM2-135M-Instruct, side by side in one run.

Workload (the peer's, ../shared/peers/bench/trl_sft.py): 200 GSM8K chats (user question -> assistant
worked answer), LoRA r16 alpha 32 dropout 0.05 on all seven projections, batch 8, max length 256, lr 2e-4,
8 optimizer steps of 8 sequences, 2 threads, same precision on both sides. tunelab accumulates micro-batches
of 2 (`--micro`, default 2: 4 accumulation steps per optimizer step, same 8 sequences per update) because
activation memory scales with the micro-batch while CPU throughput barely does. Both run as subprocesses
from the same fp32 safetensors weights (tunelab's GGUF cache), so peak RSS is each one's own.

    python benchmarks/bench_sft.py                 # fp32 and bf16, peer then tunelab
    python benchmarks/bench_sft.py --precisions fp32 --steps 8
Needs ../shared (peer script, GSM8K) and `pip install trl==1.16.0 datasets`.
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


def result_line(stdout: str) -> dict:
    return json.loads(next(x for x in stdout.splitlines() if x.startswith("RESULT "))[len("RESULT "):])


def run_peer(model_dir: Path, precision: str, steps: int) -> dict:
    env = {**os.environ, "SMOL_DIR": str(model_dir)}
    out = subprocess.run([sys.executable, str(PEERS / "trl_sft.py"), "--n", "200", "--steps", str(steps), "--bs", "8",
                          "--max_length", "256", "--bf16", "1" if precision == "bf16" else "0"],
                         capture_output=True, text=True, check=True, env=env)
    return result_line(out.stdout)


def run_ours_subprocess(precision: str, steps: int, gc: bool, micro: int) -> dict:
    command = [sys.executable, __file__, "--ours", precision, "--steps", str(steps), "--micro", str(micro)]
    command += ["--gc"] if gc else []
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return result_line(out.stdout)


def ours(precision: str, steps: int, gc: bool, micro: int) -> None:
    """Child process: the same 200 chats through tunelab's SFT task."""
    sys.path.insert(0, str(PEERS))
    import common  # the peer's own data loader, so both sides see identical conversations

    from tunelab.recipes import validate
    from tunelab.runner import run_recipe

    rows, _ = common.load_sft(200)
    folder = Path(tempfile.mkdtemp())
    data = folder / "chats.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = validate({
        "name": "bench_sft", "task": "sft", "output_dir": str(folder / "runs"),
        "model": {"name": "smollm2-135m", "max_length": 256},
        "data": {"train": str(data), "eval": str(data), "format": "messages", "eval_limit": 8},
        "adapter": {"variant": "lora", "rank": 16, "alpha": 32, "dropout": 0.05,
                    "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
        "train": {"lr": 2e-4, "max_steps": steps, "batch_size": micro, "grad_accum": 8 // micro,
                  "precision": precision, "threads": 2,
                  "warmup_ratio": 0.0, "log_every": 1, "gradient_checkpointing": gc},
    })
    summary = run_recipe(config)[0].summary
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"tokens_per_s": summary["tokens_per_s"], "train_s": summary["train_seconds"],
                                  "peak_rss_mb": round(peak, 1), "precision": summary["precision"],
                                  "eval_loss": summary["metrics"]["eval_loss"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--gc", action="store_true", help="tunelab with gradient checkpointing (peer keeps TRL's gc=0)")
    parser.add_argument("--micro", type=int, default=2, choices=[1, 2, 4, 8],
                        help="tunelab micro-batch; 8 // micro accumulation steps keep 8 sequences per optimizer step")
    parser.add_argument("--ours", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TUNELAB_QUIET", "1")
    if args.ours:
        ours(args.ours, args.steps, args.gc, args.micro)
        return
    from tunelab.assets.models import resolve_model

    model_dir = resolve_model("smollm2-135m").path
    for precision in args.precisions.split(","):
        peer = None if args.skip_peer else run_peer(model_dir, precision, args.steps)
        mine = run_ours_subprocess(precision, args.steps, args.gc, args.micro)
        setup = f"{precision}{' +gc' if args.gc else ''}, micro-batch {args.micro} x {8 // args.micro}"
        line = (f"{setup}: tunelab {mine['tokens_per_s']} tokens/s, "
                f"peak RSS {mine['peak_rss_mb']:.0f} MB")
        if peer:
            line += (f" | TRL {peer['tokens_per_s']} tokens/s, peak RSS {peer['peak_rss_mb']:.0f} MB | speed "
                     f"{mine['tokens_per_s'] / peer['tokens_per_s']:.2f}x, memory "
                     f"{mine['peak_rss_mb'] / peer['peak_rss_mb']:.2f}x")
        print(line, flush=True)


if __name__ == "__main__":
    main()
