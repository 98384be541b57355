"""The machine's own matmul rate, measured in the benchmark's process: the ceiling a training loop is
compared with (a loop at half of it spends the other half on memory traffic, softmax, optimizer, Python)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import torch


def vector_extensions() -> str:
    """The CPU's AVX2 / AVX-512 flags, as `grep -o 'avx512[a-z_0-9]*\\|avx2' /proc/cpuinfo | sort -u` gives."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    return " ".join(sorted(set(re.findall(r"avx512[a-z_0-9]*|avx2", text)))) or "none"


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 1024, seconds: float = 2.0,
                  device: str = "cpu") -> float:
    """Sustained n x n x n matmul rate (2n³ FLOPs each): at the current torch thread count on the CPU,
    on a GPU with its queue drained before each clock reading."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)

    def drained() -> float:
        if device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter()

    for _ in range(3):
        a @ b
    count, start = 0, drained()
    while drained() - start < seconds:
        for _ in range(1 if device == "cpu" else 10):
            a @ b
            count += 1
    return 2 * n**3 * count / (drained() - start) / 1e9
