"""Peak memory (and step time) of LoRA training on SmolLM2-135M: fp32 base vs 4-bit (QLoRA) base, on the CPU.

Workload: the packaged SmolLM2-135M-Instruct (fp32 safetensors from tunelab's GGUF cache), LoRA r16 alpha 32
on all seven projections (configs/gsm8k_sft.yaml), `--steps` AdamW steps on a micro-batch of `--batch`
random-token sequences of `--length` tokens, fp32 compute, tunelab's chunked LM loss. Each mode runs in
its own subprocess so each peak is its own. Figures: RSS after loading, the peak while loading (4-bit
quantises as the weights arrive), and the peak during the training steps alone (Linux VmHWM, reset through
/proc/self/clear_refs after loading), plus ru_maxrss over the whole process.

    python benchmarks/qlora_memory.py                       # fp32 and 4bit, 3 steps, batch 2 x 128
    python benchmarks/qlora_memory.py --modes fp32 4bit 8bit --steps 2
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def status_mb(field: str) -> float:
    """A /proc/self/status memory field (VmRSS, VmHWM) in MB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) / 1024


def reset_peak() -> None:
    """Start a new VmHWM: writing 5 to clear_refs sets the high-water mark to the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def child(mode: str, steps: int, batch: int, length: int, threads: int) -> dict:
    import torch

    from tunelab.adapters.inject import inject_adapters
    from tunelab.adapters.spec import AdapterConfig
    from tunelab.assets.models import resolve_model
    from tunelab.config import ModelConfig
    from tunelab.models.causal_lm import load_causal_lm
    from tunelab.train.lm_loss import mean_nll

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    path = resolve_model("smollm2-135m").path
    started = time.perf_counter()
    model = load_causal_lm(path, ModelConfig(name="smollm2-135m", quantize=mode if mode != "fp32" else "none"))
    inject_adapters(model, AdapterConfig(variant="lora", rank=16, alpha=32, targets=TARGETS))
    load_s, load_peak, after_load = time.perf_counter() - started, status_mb("VmHWM"), status_mb("VmRSS")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4)
    ids = torch.randint(0, model.config.vocab_size, (batch, length))
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "targets": torch.cat([ids[:, 1:], torch.full((batch, 1), -100)], dim=1)}
    reset_peak()
    model.train()
    losses, times = [], []
    for _ in range(steps):
        tick = time.perf_counter()
        loss = mean_nll(model, data, chunk=1024)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - tick)
        losses.append(loss.item())
    whole_run = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"mode": mode, "load_s": load_s, "after_load_mb": after_load, "load_peak_mb": load_peak,
            "train_peak_mb": status_mb("VmHWM"), "ru_maxrss_mb": whole_run,
            "step_s": sum(times[1:]) / max(len(times) - 1, 1), "first_loss": losses[0], "last_loss": losses[-1],
            "trainable": sum(p.numel() for p in trainable)}


def cpu_flags() -> str:
    flags = set(re.findall(r"\b(avx512[a-z_0-9]*|avx2)\b", Path("/proc/cpuinfo").read_text()))
    return " ".join(sorted(flags)) or "no AVX2/AVX-512"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["fp32", "4bit"], choices=["fp32", "4bit", "8bit"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.steps, args.batch, args.length, args.threads)))
        return
    print(f"SmolLM2-135M LoRA r16 (7 projections), batch {args.batch} x {args.length}, {args.steps} steps, "
          f"{args.threads} threads, CPU flags: {cpu_flags()}")
    print("| base | load s | RSS after load MB | load peak MB | training peak MB | ru_maxrss MB | step s "
          "| loss first -> last |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in args.modes:
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--steps", str(args.steps), "--batch",
                              str(args.batch), "--length", str(args.length), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        r = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT "):])
        print(f"| {mode} | {r['load_s']:.1f} | {r['after_load_mb']:,.0f} | {r['load_peak_mb']:,.0f} | "
              f"{r['train_peak_mb']:,.0f} | {r['ru_maxrss_mb']:,.0f} | {r['step_s']:.2f} | "
              f"{r['first_loss']:.3f} -> {r['last_loss']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
