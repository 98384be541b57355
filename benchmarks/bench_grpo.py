"""tunelab GRPO vs TRL GRPOTrainer + PEFT LoRA on SmolLM2-135M-Instruct, side by side in one run.

Workload (the peer's, ../shared/peers/bench/trl_grpo.py): 16 GSM8K test questions (shuffled with seed 0)
as chat prompts, 4 prompts x 4 completions per optimizer step, at most 32 new tokens, sampling at
temperature 1, reward = 1 if the final answer string appears in the completion, +0.1 if it holds any
digit; LoRA r16 alpha 32 dropout 0.05 on all seven projections, lr 1e-5, β 0 (no reference), token-level
loss aggregation (TRL's "dapo"), 2 threads, fp32 on both sides. Each side runs as its own subprocess (peak
RSS is its own). tunelab samples the 4 completions of a prompt from one prompt prefill (shared KV cache)
and drops finished rows; TRL calls HF generate with the prompt repeated 4 times.

    python benchmarks/bench_grpo.py [--steps 3]
Needs ../shared (peer script, GSM8K) and TRL: `pip install --no-deps --target /tmp/trlpkgs trl==1.16.0`
(then TRL_PATH=/tmp/trlpkgs), or trl installed in the environment.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.bench_dpo import PEERS, child_env, result_line  # noqa: E402 (shared subprocess plumbing)

REWARD = '''
def answer_in_completion(prompts, completions, answer, **_):
    """The peer benchmark's reward: 1 if the final answer appears, +0.1 if the completion holds a digit."""
    return [(1.0 if a in c else 0.0) + (0.1 if any(ch.isdigit() for ch in c) else 0.0)
            for c, a in zip(completions, answer)]
'''


def peer_rows(n: int) -> list[dict]:
    """The peer's prompts, drawn exactly as trl_grpo.py draws them."""
    data = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl.gz"
    rows = [json.loads(line) for line in gzip.open(data, "rt")]
    random.Random(0).shuffle(rows)
    return [{"prompt": r["question"], "answer": r.get("final_answer") or r["answer"].split("####")[-1].strip()}
            for r in rows[:n]]


def run_peer(model_dir: Path, steps: int) -> dict:
    out = subprocess.run([sys.executable, str(PEERS / "trl_grpo.py"), "--prompts", "16", "--gens", "4", "--bs", "16",
                          "--max_completion_length", "32", "--steps", str(steps)],
                         capture_output=True, text=True, env=child_env(model_dir))
    if out.returncode:
        raise SystemExit(f"peer failed:\n{out.stderr[-3000:]}")
    return result_line(out.stdout)


def ours(steps: int) -> None:
    """Child process: the peer's prompts and reward through tunelab's GRPO task."""
    from tunelab.recipes import validate
    from tunelab.runner import run_recipe

    folder = Path(tempfile.mkdtemp())
    data = folder / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in peer_rows(16)))
    (folder / "bench_reward.py").write_text(REWARD)
    config = validate({
        "name": "bench_grpo", "task": "grpo", "output_dir": str(folder / "runs"),
        "model": {"name": "smollm2-135m", "max_length": 512},
        "data": {"train": str(data), "eval": str(data), "eval_limit": 4},
        "adapter": {"variant": "lora", "rank": 16, "alpha": 32, "dropout": 0.05,
                    "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
        "train": {"lr": 1e-5, "max_steps": steps, "batch_size": 4, "precision": "fp32", "threads": 2,
                  "warmup_ratio": 0.0, "log_every": 1},
        "eval": {"batch_size": 4},
        "grpo": {"num_generations": 4, "max_new_tokens": 32, "temperature": 1.0, "beta": 0.0,
                 "loss_aggregation": "token", "answer": "none",
                 "rewards": [{"name": f"{folder / 'bench_reward.py'}:answer_in_completion"}]},
    })
    outcome = run_recipe(config)[0]
    summary = outcome.summary
    logged = [json.loads(x) for x in (outcome.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps_logged = [r for r in logged if "gen_seconds" in r]
    generate_s = sum(r["gen_seconds"] for r in steps_logged)  # one rollout set per step (iterations 1)
    print("RESULT " + json.dumps({
        "s_per_step": round(summary["train_seconds"] / steps, 2), "train_s": summary["train_seconds"],
        "generate_s": round(generate_s, 2), "generation_share": round(generate_s / summary["train_seconds"], 3),
        "mean_completion_len": [r["completion_length"] for r in steps_logged],
        "rewards": [r["reward"] for r in steps_logged], "tokens_per_s": summary["tokens_per_s"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def run_ours_subprocess(model_dir: Path, steps: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--ours", "--steps", str(steps)], capture_output=True, text=True,
                         env=child_env(model_dir))
    if out.returncode:
        raise SystemExit(f"tunelab failed:\n{out.stderr[-3000:]}")
    return result_line(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--ours", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours:
        ours(args.steps)
        return
    import torch

    from benchmarks.machine import matmul_gflops, vector_extensions
    from tunelab.assets.models import resolve_model

    torch.set_num_threads(2)
    print(f"CPU: {vector_extensions()}; fp32 matmul {matmul_gflops(torch.float32):.0f} GFLOP/s on 2 threads",
          flush=True)
    model_dir = resolve_model("smollm2-135m").path
    peer = run_peer(model_dir, args.steps)
    mine = run_ours_subprocess(model_dir, args.steps)
    peer_step = peer["s_per_step"]
    print(f"TRL GRPOTrainer: {peer_step:.1f} s/step, generation share {peer['generation_share']:.0%}, "
          f"peak RSS {peer['peak_rss_mb']:.0f} MB, mean completion length {peer['mean_completion_len']}")
    print(f"tunelab grpo:    {mine['s_per_step']:.1f} s/step, generation share {mine['generation_share']:.0%}, "
          f"peak RSS {mine['peak_rss_mb']:.0f} MB, mean completion length {mine['mean_completion_len']}")
    print(f"tunelab vs TRL: {peer_step / mine['s_per_step']:.2f}x faster per step, "
          f"{mine['peak_rss_mb'] / peer['peak_rss_mb']:.2f}x peak RSS")
    print("RESULT " + json.dumps({"TRL": peer, "tunelab": mine}))


if __name__ == "__main__":
    main()
