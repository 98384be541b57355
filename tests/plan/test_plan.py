"""`tunelab plan`: the arithmetic of the planner on hand-made calibrations, the sampled peak against a
known allocation, the units a user types, and the plan of a small recipe against the peak RSS and step
time its own run then measures (each in a fresh process, as a user runs them)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunelab.plan.calibrate import Calibration, SizePoint, calibration_sizes
from tunelab.plan.commands import parse_duration, parse_memory
from tunelab.plan.planner import make_plan
from tunelab.plan.rss import current_rss_mb, sampled_peak

ROOT = Path(__file__).resolve().parents[2]


def calibration(points):
    return Calibration([SizePoint(b, mb, s) for b, mb, s in points], warm_mb=500.0, warmup_seconds=1.0)


def test_the_largest_micro_batch_that_fits_keeps_the_global_batch():
    # peak(b) = 1000 + 100·b MB; t_micro(b) = 0.2 + 0.1·b s; the recipe: batch 16 x accumulation 2 (G = 32)
    cal = calibration([(8, 1800.0, 1.0), (16, 2600.0, 1.8)])
    plan = make_plan("r", cal, batch_size=16, grad_accum=2, steps=100, loading_peak_mb=900.0, memory_limit_mb=2000.0)
    assert plan.configured.peak_mb == pytest.approx(2600.0) and not plan.configured.fits
    assert plan.configured.step_seconds == pytest.approx(2 * 1.8)
    chosen = plan.chosen
    assert (chosen.batch_size, chosen.grad_accum) == (8, 4)  # 32 and 16 exceed 2,000 MB; 8 is the largest divisor left
    assert chosen.peak_mb == pytest.approx(1800.0) and chosen.step_seconds == pytest.approx(4 * 1.0)
    assert plan.eta_seconds == pytest.approx(100 * 4.0)
    none_fits = make_plan("r", cal, 16, 2, 100, 900.0, memory_limit_mb=1050.0)
    assert none_fits.chosen is None


def test_loading_can_be_the_peak():
    cal = calibration([(1, 600.0, 0.1), (2, 610.0, 0.2)])
    plan = make_plan("r", cal, 2, 1, 10, loading_peak_mb=3000.0)  # e.g. a large CSV read and tokenised
    assert plan.configured.peak_mb == 3000.0


def test_calibration_sizes_bracket_the_recipe():
    assert calibration_sizes(32) == [16, 32] and calibration_sizes(3) == [1, 3] and calibration_sizes(1) == [1, 2]


def test_sampled_peak_sees_a_short_lived_allocation():
    import mmap
    import time

    before = current_rss_mb()
    with sampled_peak() as peak:
        block = mmap.mmap(-1, 64 * 2**20)  # 64 MiB of fresh pages (no allocator can hand back old ones)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        time.sleep(0.05)
        block.close()
    assert peak.mb - before > 50 and current_rss_mb() - before < 30  # seen inside, gone after


def test_units():
    assert parse_memory("8GB") == 8192 and parse_memory("512MB") == 512 and parse_memory("1.5g") == 1536
    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    for bad, parse in (("eight", parse_memory), ("8 parsecs", parse_memory), ("soon", parse_duration)):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)


def tunelab(*argv, cache):
    env = {**os.environ, "TUNELAB_CACHE": str(cache), "TUNELAB_QUIET": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tunelab", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def test_plan_of_a_small_recipe_matches_its_run(tmp_path):
    """Classification with adapters in every MiniLM layer: the plan's peak RSS within 15% of the run's."""
    overrides = ["data.limit=512", "train.max_steps=24", "train.batch_size=16", "model.max_length=96",
                 "adapter.targets=[query,value]", "train.threads=2", f"output_dir={tmp_path / 'runs'}",
                 "variants={}", "name=plan_check", "adapter.max_trainable=null", "adapter.plan=fixed"]
    cache = tmp_path / "cache"
    planned = tunelab("plan", "configs/demo.yaml", *overrides, "--memory", "64GB", "--json",
                      str(tmp_path / "plan.json"), cache=cache)
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert "as written: train.batch_size=16 train.grad_accum=1" in planned.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [p["size"] for p in plan["calibration"]] == [8, 16] and plan["steps"] == 24
    ran = tunelab("run", "configs/demo.yaml", *overrides, cache=cache)
    assert ran.returncode == 0, ran.stderr[-2000:]
    summary = json.loads(next((tmp_path / "runs").rglob("summary.json")).read_text())
    block = summary["plan"]
    assert block["measured_peak_mb"] == summary["peak_rss_mb"] > 0
    assert abs(block["peak_error"]) < 0.15, block
    assert abs(block["step_error"]) < 0.6, block  # timing on a shared 2-core test machine: loose bound here
