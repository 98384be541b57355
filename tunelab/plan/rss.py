"""Resident memory of this process: now, the highest so far, and the peak inside a block of code.

The peak inside a block is sampled: a thread reads /proc/self/statm every `interval` seconds while the
block runs (activations of a training step live for the whole backward pass, far longer than the
interval). `resource.getrusage` only knows the highest RSS of the process's whole life, which is what
a finished run reports as its measured peak.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MB = 1024 * 1024


def current_rss_mb() -> float:
    """RSS now (Linux /proc; elsewhere the lifetime peak is the best there is)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * PAGE / MB
    except OSError:
        return process_peak_mb()


def process_peak_mb() -> float:
    """The highest RSS this process ever had (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


@dataclass
class Peak:
    mb: float = 0.0


@contextmanager
def sampled_peak(interval: float = 0.002):
    """with sampled_peak() as peak: ...  -> peak.mb, the highest RSS seen while the block ran."""
    peak = Peak(current_rss_mb())
    done = threading.Event()

    def watch() -> None:
        while not done.wait(interval):
            peak.mb = max(peak.mb, current_rss_mb())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()
        peak.mb = max(peak.mb, current_rss_mb())
