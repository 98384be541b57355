"""tunelab vs HF Trainer + PEFT LoRA on sequence classification, side by side in one run.

Workload (the peer's, ../shared/peers/bench/peft_cls.py): MiniLM-L6, LoRA r8 alpha 16 dropout 0.05 on
query/value, AG News 2,000 train / 1,000 test texts, batch 32, max length 128, lr 5e-4, one epoch, 2 threads.
The peer runs first as a subprocess; tunelab then trains on exactly the same rows (written out by the
peer's own data loader) and the script prints samples/s, accuracy and the ratio.

    python benchmarks/bench_classification.py              # peer + tunelab bf16 + tunelab fp32
    python benchmarks/bench_classification.py --skip-peer  # tunelab only (peer figures from RESULTS.md)
Needs ../shared (peer script, data) and `pip install datasets` for the peer's Trainer.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT.parent / "shared" / "peers" / "bench"


def run_peer(n: int, test: int) -> dict:
    out = subprocess.run([sys.executable, str(PEERS / "peft_cls.py"), "--method", "lora", "--n", str(n),
                          "--test", str(test)], capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def write_peer_rows(n: int, test: int, folder: Path) -> tuple[Path, Path]:
    """The same (text, label) rows the peer trains and tests on, via its own loader."""
    sys.path.insert(0, str(PEERS))
    import common  # the peer's data loader, used only to reproduce its split

    train, evaluation, _ = common.load_cls(n, test)
    paths = []
    for name, rows in (("train.csv", train), ("test.csv", evaluation)):
        path = folder / name
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        paths.append(path)
    return paths[0], paths[1]


def run_tunelab(train: Path, test: Path, precision: str, out: Path, seed: int = 0) -> dict:
    from tunelab.recipes import validate
    from tunelab.runner import run_recipe

    config = validate({
        "name": f"bench_cls_{precision}_{seed}", "output_dir": str(out),
        "model": {"name": "minilm", "max_length": 128},
        "data": {"train": str(train), "eval": str(test)},
        "adapter": {"variant": "lora", "rank": 8, "alpha": 16, "dropout": 0.05, "targets": ["query", "value"]},
        "train": {"lr": 5e-4, "epochs": 1, "batch_size": 32, "precision": precision, "warmup_ratio": 0.0,
                  "weight_decay": 0.0, "threads": 2, "log_every": 10, "seed": seed},
    })
    summary = run_recipe(config)[0].summary
    return {"samples_per_s": summary["samples_per_s"], "accuracy": summary["metrics"]["accuracy"],
            "train_seconds": summary["train_seconds"], "precision": summary["precision"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--seeds", default="0,1,2", help="tunelab seeds (accuracy after 63 steps varies by seed)")
    args = parser.parse_args()
    os.environ.setdefault("TUNELAB_QUIET", "1")
    peer = None if args.skip_peer else run_peer(args.n, args.test)
    if peer:
        print(f"peer HF Trainer + PEFT LoRA: {peer['samples_per_s']} samples/s, accuracy {peer['accuracy']}, "
              f"pad fraction {peer['pad_fraction']}, peak RSS {peer['peak_rss_mb']} MB")
    with tempfile.TemporaryDirectory() as tmp:
        train, test = write_peer_rows(args.n, args.test, Path(tmp))
        for precision in args.precisions.split(","):
            runs = [run_tunelab(train, test, precision, Path(tmp) / "runs", int(seed))
                    for seed in args.seeds.split(",")]
            speed = sum(r["samples_per_s"] for r in runs) / len(runs)
            accuracy = [round(r["accuracy"], 4) for r in runs]
            ratio = f", {speed / peer['samples_per_s']:.2f}x the peer" if peer else ""
            print(f"tunelab LoRA ({runs[0]['precision']}): {speed:.1f} samples/s (mean of {len(runs)} seeds), "
                  f"accuracy per seed {accuracy} mean {sum(accuracy) / len(accuracy):.4f}{ratio}")


if __name__ == "__main__":
    main()
