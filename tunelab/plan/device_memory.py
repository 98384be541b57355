"""The memory a plan predicts and a run measures, on the device that trains.

On the CPU that is the process's resident memory (RSS, `tunelab.plan.rss`): weights, activations and
optimizer state all live there and RSS is what the operating system kills for. On a CUDA GPU it is
the memory PyTorch's tensors hold on the device (`torch.cuda.memory_allocated`), what a CUDA
out-of-memory error is about; its peak inside a block is exact (the allocator's own high-water mark,
reset at the block's start) rather than sampled. The caching allocator reserves somewhat more than it
hands out (`torch.cuda.max_memory_reserved`); the runs record both, the plan predicts the allocated peak.

CUDA work is asynchronous: a wall-clock reading after a step measures its launch, not its work, so every
timed block here ends with `synchronize(device)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from tunelab.plan import rss

MB = 1024 * 1024


def on_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def memory_name(device: torch.device) -> str:
    """How the plan names the memory it predicts, for the terminal and the docs."""
    return "GPU memory allocated" if on_cuda(device) else "RSS"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so the clock read next covers it."""
    if on_cuda(device):
        torch.cuda.synchronize(device)


def current_mb(device: torch.device) -> float:
    """Memory held now: RSS on the CPU, PyTorch's allocated tensors on a GPU."""
    return torch.cuda.memory_allocated(device) / MB if on_cuda(device) else rss.current_rss_mb()


def lifetime_peak_mb(device: torch.device) -> float:
    """The highest the memory has been in this process (since the last `sampled_peak` on a GPU)."""
    return torch.cuda.max_memory_allocated(device) / MB if on_cuda(device) else rss.process_peak_mb()


def reserved_peak_mb(device: torch.device) -> float | None:
    """The caching allocator's highest reservation on a GPU (what nvidia-smi counts); None on the CPU."""
    return torch.cuda.max_memory_reserved(device) / MB if on_cuda(device) else None


@contextmanager
def sampled_peak(device: torch.device) -> Iterator[rss.Peak]:
    """with sampled_peak(device) as peak: ...  -> peak.mb, the highest memory while the block ran."""
    if not on_cuda(device):
        with rss.sampled_peak() as peak:
            yield peak
        return
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    peak = rss.Peak(current_mb(device))
    try:
        yield peak
    finally:
        synchronize(device)
        peak.mb = max(peak.mb, lifetime_peak_mb(device))
