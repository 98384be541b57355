"""Load times of the packaged models: cold (first use) vs warm (cached), and the safetensors cache
vs the peer path of reading the GGUF with transformers on every load.

    python benchmarks/bench_model_load.py [--repeats 3] [--threads 2]

Cold runs use an empty temporary TUNELAB_CACHE, so `smollm2-135m` pays its one-off GGUF →
safetensors conversion and `minilm` its one-off weight hash. "load" = resolve_model +
load_tokenizer + from_pretrained, the path every tunelab run takes. Warm figures are medians.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    del result
    gc.collect()
    return seconds


def load(alias: str) -> tuple[Any, Any]:
    """What a run does: resolve the name, then tokenizer + model from the resolved folder."""
    from transformers import AutoModel, AutoModelForCausalLM

    from tunelab.assets.models import MODEL_ALIASES, load_tokenizer, resolve_model

    resolved = resolve_model(alias)
    model_class = AutoModelForCausalLM if MODEL_ALIASES[alias].kind == "causal_lm" else AutoModel
    return load_tokenizer(resolved), model_class.from_pretrained(resolved.path)


def load_gguf_directly() -> tuple[Any, Any]:
    """The peer: what loading the packaged GGUF costs without tunelab's cache (every single time)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.assets.models import MODEL_ALIASES, package_root

    alias = MODEL_ALIASES["smollm2-135m"]
    folder = str(package_root(alias))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=alias.gguf_file)
    return tokenizer, AutoModelForCausalLM.from_pretrained(folder, gguf_file=alias.gguf_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm loads per model (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as cache:
        os.environ["TUNELAB_CACHE"] = cache
        import_s = timed(lambda: __import__("transformers").AutoModel)  # lazy module: force the import
        import torch
        import transformers

        torch.set_num_threads(args.threads)
        rows = []
        for alias in ("minilm", "smollm2-135m"):
            cold = timed(lambda a=alias: load(a))
            warm = [timed(lambda a=alias: load(a)) for _ in range(args.repeats)]
            rows.append((alias, cold, statistics.median(warm), min(warm)))
        direct = timed(load_gguf_directly)

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads")
    print(f"import transformers: {import_s:.2f} s (paid once per process, not included below)\n")
    print(f"| {'model':<14} | {'cold load (s)':>13} | {'warm median (s)':>15} | {'warm min (s)':>12} |")
    print(f"|{'-' * 16}|{'-' * 15}|{'-' * 17}|{'-' * 14}|")
    for alias, cold, warm_median, warm_min in rows:
        print(f"| {alias:<14} | {cold:>13.2f} | {warm_median:>15.2f} | {warm_min:>12.2f} |")
    smollm2_warm = rows[1][2]
    print(f"\npeer: GGUF read by transformers on every load: {direct:.2f} s "
          f"-> cached load is {direct / smollm2_warm:.0f}x faster ({smollm2_warm:.2f} s)")


if __name__ == "__main__":
    main()
