"""How close `tunelab plan` comes to what the run then measures: peak RSS and seconds per optimizer step.

For each recipe and setting below: `tunelab plan RECIPE overrides` in a fresh process (it stores the plan
in the cache), then `tunelab run RECIPE overrides` in another fresh process, whose summary.json holds
predicted beside measured (`plan` block: peak_error, step_error, eval_error, total_error = predicted /
measured − 1). Runs are short (8-150 steps, 10-60 s of training each) with small eval sets, so the whole
table takes about 15 minutes on 2 cores. Measured step time: the run's mean after its first 3 steps;
eval: the run's evaluations together; total: its training plus evaluation seconds (what the plan's ETA
predicts). Before each setting the cached DPO reference log-probs are removed, so the run computes them
as a fresh run does. Goal: |error| ≤ 15% for peak and step.

    python benchmarks/bench_plan.py            # every setting
    python benchmarks/bench_plan.py --only sft_256 dpo
    python benchmarks/bench_plan.py --encoder DIR --causal-lm DIR   # other models (e.g. on a GPU machine)

On a CUDA machine the same code predicts and measures PyTorch's allocated GPU memory instead of RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import vector_extensions  # noqa: E402

SHORT = ["train.checkpoint_every=null"]  # settings without eval_every= add eval_every=null
ENCODER_RECIPES = ("configs/demo.yaml", "configs/squad2_lora.yaml")
CAUSAL_LM_RECIPES = ("configs/gsm8k_sft.yaml", "configs/hh_dpo.yaml")
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "classification_lora_b16": ("configs/demo.yaml", [
        "variants={}", "data.limit=1024", "train.max_steps=30", "train.batch_size=16", "model.max_length=128",
        "adapter.targets=[query,value]", "adapter.max_trainable=null", "adapter.plan=fixed", "data.eval_limit=128",
        "train.eval_every=10"]),
    "classification_lora_b32_len64": ("configs/demo.yaml", [
        "variants={}", "data.limit=1024", "train.max_steps=20", "train.batch_size=32", "model.max_length=64",
        "adapter.targets=[query,value]", "adapter.max_trainable=null", "adapter.plan=fixed", "data.eval_limit=128"]),
    "classification_full_b16": ("configs/demo.yaml", [
        "variants={}", "data.limit=1024", "train.max_steps=30", "train.batch_size=16", "model.max_length=128",
        "adapter.variant=none", "adapter.targets=[]", "adapter.max_trainable=null", "data.eval_limit=128"]),
    "qa_lora": ("configs/squad2_lora.yaml", [
        "variants={}", "data.limit=300", "train.max_steps=16", "data.eval_limit=40"]),
    "sft_256": ("configs/gsm8k_sft.yaml", [
        "variants={}", "train.max_steps=8", "train.grad_accum=1", "data.limit=64", "data.eval_limit=8",
        "eval.generate=0"]),
    "sft_128_b4": ("configs/gsm8k_sft.yaml", [
        "variants={}", "train.max_steps=16", "train.batch_size=4", "train.grad_accum=1", "model.max_length=128",
        "data.limit=64", "data.eval_limit=8", "eval.generate=0"]),
    "dpo": ("configs/hh_dpo.yaml", [
        "variants={}", "train.max_steps=16", "train.grad_accum=1", "model.max_length=256", "data.limit=32",
        "data.eval_limit=8"]),
    "lm_char_gpt": ("configs/shakespeare_char_nanogpt.yaml", [
        "train.max_steps=150", "lm.eval_windows=32", "lm.samples=0"]),
    "vision_fastcnn": ("configs/cifar_fast.yaml", [
        "train.max_steps=30", "train.epochs=1"]),
}


def tunelab(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TUNELAB_CACHE": str(cache), "TUNELAB_QUIET": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tunelab", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)


def measure(name: str, recipe: str, overrides: list[str], cache: Path, out: Path, extra: list[str]) -> dict:
    evals = [] if any(o.startswith("train.eval_every=") for o in overrides) else ["train.eval_every=null"]
    settings = [*overrides, *SHORT, *evals, *extra, f"output_dir={out / name}", f"name={name}"]
    for stale in cache.rglob("dpo-ref-*.npy"):  # each run computes its reference log-probs, as a fresh run does
        stale.unlink()
    planned = tunelab(["plan", recipe, *settings], cache)
    if planned.returncode != 0:
        return {"name": name, "error": "plan: " + planned.stderr.strip().splitlines()[-1]}
    ran = tunelab(["run", recipe, *settings], cache)
    if ran.returncode != 0:
        return {"name": name, "error": "run: " + ran.stderr.strip().splitlines()[-1]}
    summary = json.loads(next((out / name).rglob("summary.json")).read_text())
    return {"name": name, "task": summary["task"], **summary.get("plan", {"error": "no plan block"})}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", help="names of settings to run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encoder", help="model.name for the classification and QA settings (default: minilm)")
    parser.add_argument("--causal-lm", help="model.name for the SFT and DPO settings (default: smollm2-135m)")
    args = parser.parse_args()
    names = args.only or list(SETTINGS)
    # The model/GGUF conversions and token caches are shared (a user's second run finds them too).
    cache = Path(os.environ.get("TUNELAB_CACHE", Path.home() / ".cache" / "tunelab"))
    import torch

    gpu = f"; GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    print(f"CPU: {vector_extensions()}; {args.threads} threads{gpu}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            recipe, overrides = SETTINGS[name]
            extra = [f"train.threads={args.threads}"]
            if args.encoder and recipe in ENCODER_RECIPES:
                extra.append(f"model.name={args.encoder}")
            if args.causal_lm and recipe in CAUSAL_LM_RECIPES:
                extra.append(f"model.name={args.causal_lm}")
            row = measure(name, recipe, overrides, cache, Path(folder), extra)
            rows.append(row)
            if "error" in row:
                print(f"{name}: {row['error']}", flush=True)
                continue
            print(f"{name:32s} peak predicted {row['predicted_peak_mb']:8,.0f} MB measured "
                  f"{row['measured_peak_mb']:8,.0f} MB ({row['peak_error']:+.1%}); step predicted "
                  f"{row['predicted_step_s']:.3f} s measured {row['measured_step_s']:.3f} s "
                  f"({row['step_error']:+.1%}); evaluations predicted {row.get('predicted_eval_s', 0):.1f} s "
                  f"measured {row.get('measured_eval_s', 0):.1f} s ({row.get('eval_error', 0):+.1%}); total "
                  f"predicted {row.get('predicted_total_s', 0):.1f} s measured {row.get('measured_total_s', 0):.1f} s "
                  f"({row.get('total_error', 0):+.1%})", flush=True)
    done = [r for r in rows if "error" not in r]
    within = sum(abs(r["peak_error"]) <= 0.15 and abs(r["step_error"]) <= 0.15 for r in done)
    print(f"{within}/{len(done)} settings within 15% on both; worst peak error "
          f"{max((abs(r['peak_error']) for r in done), default=0):.1%}, worst step error "
          f"{max((abs(r['step_error']) for r in done), default=0):.1%}, worst total (ETA) error "
          f"{max((abs(r.get('total_error', 0)) for r in done), default=0):.1%}")
    print("RESULT " + json.dumps(rows))


if __name__ == "__main__":
    main()
