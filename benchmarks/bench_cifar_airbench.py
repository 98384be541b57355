"""cifar_fast vs airbench94 on the same CIFAR-10 8k/2k split, side by side in one run: CPU fp32, or a GPU.

The peer is the airbench package (pip `airbench==0.1.8`, Keller Jordan's airbench94: 94% on full CIFAR-10
in 3.83 s on an A100). Its code hard-codes `.half().cuda()`, CUDA events and a CUDA `map_location`; the
benchmark runs airbench's own source with exactly those switched to the CPU and fp32 (the replacements are
listed in CPU_FP32 and each must apply, so a changed airbench fails loudly) and changes nothing else: its
network, hyperparameters, data loader, augmentation, lookahead EMA and test-time augmentation are the
package's. Its data are our split, written in airbench's own `cifar10/{train,test}.pt` format.
torchvision's PyPI wheel is a CUDA build that does not load against the CPU torch wheel, and airbench
takes only `transforms.Normalize` from it (its CIFAR download is never reached: the files exist), so when
torchvision is missing the benchmark supplies that one class ((x - mean) / std per channel).

On a GPU (`--device cuda`) airbench runs exactly as published (fp16, CUDA events), after one warm-up
budget (cuDNN's kernel choice); tunelab's recipe runs with the overrides given (`--ours-overrides
train.precision=auto` for bf16 autocast), each budget a fresh process as a user runs it.

Time to accuracy, the airbench way: each side trains at a few epoch budgets (its schedule shaped to the
budget) and is scored at the end (with its test-time augmentation); time to X is the training time of the
cheapest budget whose final accuracy reaches X. Training time excludes the per-epoch evaluations on both
sides; airbench's includes its whitening initialisation and final TTA pass, tunelab's the training steps.

    pip install --no-deps airbench==0.1.8          # or: pip install -e ".[bench]"
    flock /tmp/tunelab-bench.lock python benchmarks/bench_cifar_airbench.py            # both sides
    python benchmarks/bench_cifar_airbench.py --recipe cifar_fast85 --ours-epochs 18 --seeds 0 1 2 --peer-epochs 20
    python benchmarks/bench_cifar_airbench.py --peer-epochs 9.9 --ours-epochs 10         # a quick look
    python benchmarks/bench_cifar_airbench.py --device cuda --ours-overrides train.precision=auto
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import matmul_gflops, vector_extensions  # noqa: E402

# (file, old, new): the device/dtype switches, nothing else.
CPU_FP32 = [
    ("lib_airbench94.py", "net = net.half().cuda()", "net = net.float()"),
    ("utils.py", "self.images = (self.images.half() / 255)", "self.images = (self.images.float() / 255)"),
    ("utils.py", "map_location=torch.device(gpu)", "map_location='cpu'"),
    ("utils.py", "torch.cuda.Event(enable_timing=True)", "_CpuEvent()"),
    ("utils.py", "torch.cuda.synchronize()", "None"),
]
CPU_EVENT = '''
class _CpuEvent:
    """Stands in for torch.cuda.Event(enable_timing=True): wall-clock marks in milliseconds."""
    def record(self):
        import time
        self.t = time.perf_counter()
    def elapsed_time(self, end):
        return 1000.0 * (end.t - self.t)
'''


def normalize_stand_in() -> None:
    """torchvision.transforms.Normalize for airbench's import when torchvision cannot be loaded."""
    try:
        import torchvision.transforms  # noqa: F401
        return
    except (ImportError, RuntimeError):
        pass

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = torch.as_tensor(mean), torch.as_tensor(std)

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            mean, std = self.mean.to(x.dtype).view(-1, 1, 1), self.std.to(x.dtype).view(-1, 1, 1)
            return (x - mean) / std

    vision, transforms = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    transforms.Normalize = Normalize
    vision.transforms, vision.datasets = transforms, None
    sys.modules.update({"torchvision": vision, "torchvision.transforms": transforms})


def load_airbench(device: str) -> tuple[types.ModuleType, types.ModuleType]:
    """airbench's utils and lib_airbench94, executed from the installed package's source: on the CPU with
    CPU_FP32 applied, on CUDA unchanged."""
    spec = importlib.util.find_spec("airbench")
    if spec is None or spec.origin is None:
        raise SystemExit("airbench is not installed: pip install --no-deps airbench==0.1.8")
    folder = Path(spec.origin).parent
    switches = CPU_FP32 if device == "cpu" else []
    normalize_stand_in()
    package = types.ModuleType("airbench_cpu")
    package.__path__ = []
    sys.modules["airbench_cpu"] = package
    modules = {}
    for name in ("utils", "lib_airbench94"):
        source = (folder / f"{name}.py").read_text()
        for file, old, new in switches:
            if file == f"{name}.py":
                if old not in source:
                    raise SystemExit(f"airbench {file}: {old!r} not found (another airbench version?)")
                source = source.replace(old, new)
        if name == "utils" and switches:
            source = CPU_EVENT + source
        module = types.ModuleType(f"airbench_cpu.{name}")
        module.__package__ = "airbench_cpu"
        sys.modules[module.__name__] = module
        exec(compile(source, str(folder / f"{name}.py"), "exec"), module.__dict__)  # noqa: S102
        modules[name] = module
    return modules["utils"], modules["lib_airbench94"]


def our_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """The cifar_fast recipe's split: the vendored 10k images, stratified 8k/2k with data.split_seed 0."""
    from tunelab.config import DataConfig
    from tunelab.data.vision_sources import read_cifar10_vendored, stratified_split

    images, labels, names = read_cifar10_vendored()
    data = DataConfig(dataset="cifar10", eval_fraction=0.2)
    train, held = stratified_split(labels, data.eval_fraction, data.split_seed)
    as_tensor = torch.from_numpy
    return (as_tensor(images[train]), as_tensor(labels[train]).long(), as_tensor(images[held]),
            as_tensor(labels[held]).long(), names)


def run_peer(epochs: list[float], folder: Path, device: str) -> list[dict]:
    """airbench94 at each epoch budget; accuracy = its final TTA accuracy on our 2k eval split."""
    import os

    train_x, train_y, eval_x, eval_y, names = our_split()
    (folder / "cifar10").mkdir(parents=True, exist_ok=True)
    torch.save({"images": train_x, "labels": train_y, "classes": names}, folder / "cifar10" / "train.pt")
    torch.save({"images": eval_x, "labels": eval_y, "classes": names}, folder / "cifar10" / "test.pt")
    os.chdir(folder)  # airbench reads ./cifar10/
    utils, lib94 = load_airbench(device)
    seen: list[dict] = []
    show = utils.print_training_details

    def record(variables, is_final_entry):
        seen.append({key: variables.get(key) for key in ("epoch", "val_acc", "tta_val_acc", "total_time_seconds")})
        show(variables, is_final_entry)

    utils.print_training_details = record
    if device == "cuda":  # one untimed budget first: cuDNN picks its kernels, CUDA initialises
        lib94.train94(utils.CifarLoader("cifar10", train=True, batch_size=lib94.hyp["opt"]["batch_size"],
                                        aug=lib94.hyp["aug"], altflip=True), epochs=1)
    results = []
    for budget in epochs:
        torch.manual_seed(0)
        seen.clear()
        loader = utils.CifarLoader("cifar10", train=True, batch_size=lib94.hyp["opt"]["batch_size"],
                                   aug=lib94.hyp["aug"], altflip=True)
        started = time.perf_counter()
        lib94.train94(loader, epochs=budget)
        final = seen[-1]
        results.append({"side": "airbench94", "epochs": budget, "accuracy": final["tta_val_acc"],
                        "train_seconds": final["total_time_seconds"], "wall_seconds": time.perf_counter() - started,
                        "curve": [(row["epoch"], row["val_acc"], row["total_time_seconds"]) for row in seen[:-1]]})
        print(json.dumps(results[-1]), flush=True)
    return results


def run_ours(recipe: str, epochs: list[int], seeds: list[int], folder: Path, threads: int,
             overrides: list[str]) -> list[dict]:
    """A tunelab recipe at each epoch budget and seed, each in a fresh process; one row per budget with
    the mean accuracy and training seconds over the seeds (and each seed's)."""
    results = []
    for budget in epochs:
        runs = []
        for seed in seeds:
            out = folder / f"ours-{budget}-{seed}"
            command = [sys.executable, "-m", "tunelab", "run", str(ROOT / "configs" / f"{recipe}.yaml"),
                       f"train.epochs={budget}", f"train.seed={seed}", f"train.threads={threads}", f"output_dir={out}",
                       *overrides]
            subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            runs.append(json.loads(next(out.glob("*/*/summary.json")).read_text()))
            print(json.dumps({"epochs": budget, "seed": seed, "accuracy": runs[-1]["metrics"]["accuracy"],
                              "train_seconds": runs[-1]["train_seconds"]}), flush=True)
        accuracies = [run["metrics"]["accuracy"] for run in runs]
        results.append({"side": f"tunelab {recipe}", "epochs": budget, "accuracy": sum(accuracies) / len(runs),
                        "seeds": dict(zip(seeds, accuracies, strict=True)),
                        "train_seconds": sum(run["train_seconds"] for run in runs) / len(runs)})
    return results


def time_to(results: list[dict], target: float) -> float | None:
    """Training seconds of the cheapest budget whose final accuracy (the mean over seeds) reaches the target."""
    reached = [row["train_seconds"] for row in results if row["accuracy"] >= target]
    return min(reached) if reached else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-epochs", type=float, nargs="+", default=[9.9, 20, 40])
    parser.add_argument("--ours-epochs", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--recipe", default="cifar_fast", help="a recipe in configs/ (cifar_fast, cifar_fast85)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="tunelab seeds per budget (mean scored)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.80, 0.85])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--ours-overrides", nargs="*", default=[], help="key=value for tunelab's runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {vector_extensions()}; {args.threads} threads; fp32 matmul {matmul_gflops():.0f} GFLOP/s", flush=True)
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}; bf16 matmul "
              f"{matmul_gflops(torch.bfloat16, n=8192, seconds=1.0, device='cuda') / 1000:.0f} TFLOP/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-cifar-") as tmp:
        ours = run_ours(args.recipe, args.ours_epochs, args.seeds, Path(tmp), args.threads, args.ours_overrides)
        peer = run_peer(args.peer_epochs, Path(tmp), args.device)
    print("\n| side | epochs | accuracy (2k eval, TTA; mean over seeds) | per seed | train s (mean) |\n"
          "|---|---|---|---|---|")
    for row in peer + ours:
        each = ", ".join(f"{seed}: {value:.4f}" for seed, value in row.get("seeds", {}).items()) or "airbench's seed"
        print(f"| {row['side']} | {row['epochs']} | {row['accuracy']:.4f} | {each} | {row['train_seconds']:.1f} |")
    for target in args.targets:
        theirs, mine = time_to(peer, target), time_to(ours, target)
        ratio = f"{mine / theirs:.2f}x" if theirs and mine else "n/a"
        print(f"time to {target:.0%}: airbench94 {theirs if theirs is None else round(theirs, 1)} s, "
              f"tunelab {mine if mine is None else round(mine, 1)} s, ratio (tunelab / peer) {ratio}")


if __name__ == "__main__":
    main()
