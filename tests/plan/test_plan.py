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

from tunelab.plan.calibrate import Calibration, SizePoint, calibration_sizes, spread_order
from tunelab.plan.commands import parse_duration, parse_memory
from tunelab.plan.eval_cost import EvalCost
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


def test_evaluations_join_the_eta_and_can_set_the_peak():
    # training: 100 steps x 1.8 s; evaluations every 30 steps (3 of them, 2 s each) and a final one of 5 s
    cal = calibration([(8, 1800.0, 1.0), (16, 2600.0, 1.8)])
    plan = make_plan("r", cal, 16, 1, 100, 900.0, evals=EvalCost(2.0, 5.0, extra_mb=100.0), eval_every=30)
    assert plan.evaluations == 3 and plan.eval_seconds == pytest.approx(3 * 2.0 + 5.0)
    assert plan.eta_seconds == pytest.approx(100 * 1.8 + 11.0)
    assert plan.configured.peak_mb == pytest.approx(2600.0)  # 500 MB warm + 100 MB is under the step's peak
    heavy = make_plan("r", cal, 16, 1, 100, 900.0, evals=EvalCost(None, 5.0, extra_mb=2500.0), eval_every=None)
    assert heavy.evaluations == 0 and heavy.eval_seconds == pytest.approx(5.0)
    assert heavy.configured.peak_mb == pytest.approx(500.0 + 2500.0)  # e.g. generation caches in the final eval
    untimed = make_plan("r", cal, 16, 1, 100, 900.0)
    assert untimed.eval_seconds is None and untimed.eta_seconds == pytest.approx(180.0)


def test_a_time_limit_leaves_room_for_the_evaluations():
    from tunelab.plan.report import plan_lines

    cal = calibration([(8, 1800.0, 1.0), (16, 2600.0, 1.8)])
    # 100 steps x 1.8 s + 3 periodic evaluations x 2 s + a final one of 5 s = 191 s; 60 s leave 55 s after the
    # final evaluation, at 1.8 + 3 x 2 / 100 = 1.86 s per step: 29 steps
    plan = make_plan("r", cal, 16, 1, 100, 900.0, time_limit_s=60.0, evals=EvalCost(2.0, 5.0, 0.0), eval_every=30)
    assert plan_lines(plan, "d")[-1].endswith("train.max_steps=29 would")
    slow_eval = make_plan("r", cal, 16, 1, 100, 900.0, time_limit_s=4.0, evals=EvalCost(None, 5.0, 0.0))
    assert "the final evaluation alone takes" in plan_lines(slow_eval, "d")[-1]


def test_timed_batches_spread_over_the_epoch_whenever_timing_stops():
    order = spread_order(32)
    assert sorted(order) == list(range(32))
    for count in (2, 4, 8):  # the first `count` timed positions: one in each 1/count of the epoch
        assert sorted(i * count // 32 for i in order[:count]) == list(range(count))


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
    overrides = ["data.limit=512", "data.eval_limit=256", "train.max_steps=24", "train.batch_size=16",
                 "model.max_length=96",
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
    assert plan["final_eval_seconds"] > 0 and "evaluations: the final one" in planned.stdout
    assert block["measured_eval_s"] == pytest.approx(summary["eval_seconds"], abs=0.01) and summary["eval_seconds"] > 0
    assert abs(block["eval_error"]) < 0.6 and abs(block["total_error"]) < 0.6, block
