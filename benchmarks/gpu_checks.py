"""The GPU checks, as one prepared script for a lent CUDA machine: every check a fresh `tunelab` process
(or benchmark) with its own time limit, results appended to OUT/gpu_checks.jsonl as they finish, so a
check that fails or runs out of time costs only itself.

Checks, in order of what they prove:
1. env: GPU, CUDA, bf16 support, the card's own bf16 / fp32 matmul rate (the ceiling loops are held to);
2. scale_out: the char-level GPT of the tiny-Shakespeare study run plainly, under `--nproc 1` (DDP over
   NCCL) and `--nproc 1 train.fsdp=true` (FSDP2 over NCCL): the same final metrics and their step times;
3. throughput: LoRA and full fine-tuning of a MiniLM-L6-shaped encoder on AG News, fp32 vs bf16 autocast;
4. qlora: LoRA r16 SFT of a SmolLM2-135M-shaped decoder on GSM8K, bf16 base vs 4-bit NF4 base
   (bitsandbytes): peak allocated GPU memory and step time;
5. vision: benchmarks/bench_cifar_airbench.py --device cuda (airbench94 unchanged vs cifar_fast, 8k/2k);
6. plan: benchmarks/bench_plan.py on CUDA, predicted vs measured GPU memory and step time.

The GPU machine has no network and no model hub, so the pretrained encoder and decoder cannot travel
with the tree (their weights are larger than what a call carries): `--shapes DIR` holds their config and
tokenizer files only, and the script builds randomly initialised models of exactly those shapes. Speed,
memory and agreement between launch modes do not depend on the weights' values; accuracy does, and no
accuracy of these two models is reported.

    bash tools/gpu_carry.sh                                              # here: builds .gpu/ (wheels, shapes)
    python benchmarks/gpu_checks.py --shapes .gpu --out $OUT            # on the GPU machine
    python benchmarks/gpu_checks.py --shapes .gpu --out /tmp/o --quick  # the same checks, tiny, any machine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class Checks:
    """Runs commands with limits and appends each result to OUT/gpu_checks.jsonl."""

    def __init__(self, out: Path, work: Path, budget_s: float) -> None:
        self.out, self.work = out, work
        self.deadline = time.perf_counter() + budget_s  # no check starts or runs past it
        self.results = out / "gpu_checks.jsonl"
        self.log = (out / "gpu_checks.log").open("a", encoding="utf-8")

    def record(self, row: dict) -> None:
        print(json.dumps(row), flush=True)
        with self.results.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def command(self, name: str, args: list[str], limit: float) -> tuple[int, str]:
        """Run `args` (python -m ... or a script) with a time limit; its output goes to the log."""
        limit = min(limit, self.deadline - time.perf_counter())
        if limit < 10:
            return 125, f"skipped: the script's time budget is spent ({name})"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "TUNELAB_QUIET": "1", "PYTHONUNBUFFERED": "1"}
        started = time.perf_counter()
        self.log.write(f"\n===== {name}: {' '.join(args)}\n")
        self.log.flush()
        try:
            done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=limit, check=False)
            code, text = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as expired:
            code = 124
            text = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        self.log.write(text + f"\n===== {name}: exit {code} in {time.perf_counter() - started:.1f} s\n")
        self.log.flush()
        return code, text

    def run(self, name: str, recipe: str, overrides: list[str], limit: float, nproc: int | None = None) -> dict:
        """`tunelab run` in a fresh process; the row holds its summary's speed and memory figures."""
        folder = self.work / "runs" / name
        shutil.rmtree(folder, ignore_errors=True)
        launch = [f"--nproc={nproc}"] if nproc else []
        code, text = self.command(name, ["-m", "tunelab", "run", recipe, *overrides, f"output_dir={folder}",
                                         *launch], limit)
        summaries = sorted(folder.rglob("summary.json"))
        if code != 0 or not summaries:
            tail = [line for line in text.strip().splitlines() if line.strip()][-3:]
            return {"check": name, "error": f"exit {code}: " + " | ".join(tail)}
        summary = json.loads(summaries[-1].read_text())
        keep = ("device", "precision", "processes", "metrics", "steps", "samples_per_s", "tokens_per_s",
                "train_seconds", "step_seconds", "peak_cuda_allocated_mb", "peak_cuda_reserved_mb", "peak_rss_mb",
                "trainable_params", "total_params")
        return {"check": name, **{key: summary.get(key) for key in keep}}


def env_check(checks: Checks) -> None:
    import torch

    from benchmarks.machine import matmul_gflops

    row: dict = {"check": "env", "torch": torch.__version__, "cuda": torch.version.cuda,
                 "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        torch.backends.cuda.matmul.allow_tf32 = False
        row.update(gpu=torch.cuda.get_device_name(0), memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported(),
                   bf16_matmul_tflops=round(matmul_gflops(torch.bfloat16, 8192, 2.0, "cuda") / 1000, 1),
                   fp32_matmul_tflops=round(matmul_gflops(torch.float32, 4096, 1.0, "cuda") / 1000, 1))
    try:
        import bitsandbytes

        row["bitsandbytes"] = bitsandbytes.__version__
    except Exception as error:  # noqa: BLE001 (reported, and the QLoRA check then says why it failed)
        row["bitsandbytes"] = f"unavailable: {error}"
    checks.record(row)


def build_models(shapes: Path, models: Path, quick: bool) -> dict[str, Path]:
    """Randomly initialised models of the shapes in `shapes/<name>-shape` (config + tokenizer files)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    built = {}
    for name, factory in (("minilm", AutoModel), ("smollm2", AutoModelForCausalLM)):
        source, target = shapes / f"{name}-shape", models / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        config = AutoConfig.from_pretrained(source)
        if quick and name == "smollm2":
            config.num_hidden_layers = 2  # the dry run's decoder: same widths, two layers
        torch.manual_seed(0)
        factory.from_config(config).save_pretrained(target)
        built[name] = target
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=Path, required=True, help="folder with minilm-shape/ and smollm2-shape/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-checks"), help="models and run folders")
    parser.add_argument("--quick", action="store_true", help="tiny step counts: check the script itself")
    parser.add_argument("--budget", type=float, default=420, help="seconds for all checks together")
    parser.add_argument("--only", nargs="*", help="check names to run (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    checks = Checks(args.out, args.work, args.budget)
    wanted = set(args.only or ["env", "scale_out", "throughput", "qlora", "vision", "plan"])
    q = args.quick
    started = time.perf_counter()

    if "env" in wanted:
        env_check(checks)
    models = build_models(args.shapes, args.work / "models", q)
    threads = "train.threads=2" if q else "train.threads=8"

    if "scale_out" in wanted:  # the same recipe plainly, as DDP and as FSDP: one process, NCCL on a GPU
        lm = ["train.optimizer=adamw", f"train.max_steps={20 if q else 600}", f"train.eval_every={10 if q else 200}",
              "train.precision=auto", "lm.samples=0", f"lm.eval_windows={16 if q else 200}", threads,
              "train.checkpoint_every=null"]
        for name, extra, nproc in (("lm_plain", [], None), ("lm_ddp_nproc1", [], 1),
                                   ("lm_fsdp_nproc1", ["train.fsdp=true"], 1)):
            checks.record(checks.run(name, "configs/shakespeare_char.yaml", lm + extra, 120, nproc))

    if "throughput" in wanted:
        base = ["variants={}", f"model.name={models['minilm']}", "adapter.max_trainable=null", "adapter.plan=fixed",
                f"data.limit={64 if q else 4000}", "data.eval_limit=" + ("32" if q else "500"),
                f"train.max_steps={4 if q else 120}", "train.batch_size=32", threads, "train.checkpoint_every=null"]
        for name, extra in (("cls_lora_fp32", ["adapter.variant=lora", "adapter.targets=[query,value]",
                                               "train.precision=fp32"]),
                            ("cls_lora_bf16", ["adapter.variant=lora", "adapter.targets=[query,value]",
                                               "train.precision=bf16"]),
                            ("cls_full_fp32", ["adapter.variant=none", "adapter.targets=[]", "train.precision=fp32"]),
                            ("cls_full_bf16", ["adapter.variant=none", "adapter.targets=[]", "train.precision=bf16"])):
            checks.record(checks.run(name, "configs/demo.yaml", base + extra, 90))

    if "qlora" in wanted:
        sft = ["variants={}", f"model.name={models['smollm2']}", f"train.max_steps={3 if q else 30}",
               "train.grad_accum=1", "train.batch_size=4", "data.limit=" + ("16" if q else "240"),
               "data.eval_limit=8", "eval.generate=0", "train.eval_every=null", threads,
               "train.checkpoint_every=null"]
        for name, extra in (("sft_lora_bf16_base", ["model.quantize=none"]),
                            ("sft_qlora_4bit", ["model.quantize=4bit"]), ("sft_qlora_8bit", ["model.quantize=8bit"])):
            checks.record(checks.run(name, "configs/gsm8k_sft.yaml", sft + extra, 120))

    if "vision" in wanted:
        vision = ["benchmarks/bench_cifar_airbench.py", "--device", "cuda" if not q else "cpu", "--recipe",
                  "cifar_fast", "--threads", "2" if q else "8", "--ours-overrides", "train.precision=auto",
                  "--ours-epochs", *(["1"] if q else ["10", "20"]),
                  "--peer-epochs", *(["0.1"] if q else ["9.9", "20"])]
        code, text = checks.command("vision", vision, 240)
        lines = [line for line in text.splitlines() if line.startswith(("|", "time to", "GPU", "CPU"))]
        checks.record({"check": "vision", "exit": code, "table": lines})

    if "plan" in wanted:
        plan = ["benchmarks/bench_plan.py", "--threads", "2" if q else "8", "--encoder", str(models["minilm"]),
                "--causal-lm", str(models["smollm2"]), "--only", "classification_lora_b16", "sft_256",
                "vision_fastcnn"]
        code, text = checks.command("plan", plan, 200)
        result = [line for line in text.splitlines() if line.startswith("RESULT ")]
        rows = json.loads(result[-1][len("RESULT "):]) if result else text.strip().splitlines()[-5:]
        checks.record({"check": "plan", "exit": code, "rows": rows})
    checks.record({"check": "done", "seconds": round(time.perf_counter() - started, 1)})


if __name__ == "__main__":
    main()
