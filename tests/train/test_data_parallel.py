"""Data-parallel training (`tunelab run --nproc 2`: torchrun, two CPU processes, gloo) against one process
with the same global batch, for every task family: the same logged losses, final metrics and trained
weights within float tolerance, and the same files in the run folder (rank 0 alone writes them)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import BertForQuestionAnswering, BertForSequenceClassification

from tests.tasks.test_dpo import write_preferences
from tests.tasks.test_grpo import REWARD_FILE, TOY
from tests.tasks.tiny_chat import save_chat_model, write_toy_sft
from tests.tasks.tiny_encoder import review_vocab, save_tiny_bert
from tunelab.cli import main

ROOT = Path(__file__).resolve().parents[2]
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VOCAB = review_vocab("[CLS]", "[SEP]")
#: every recipe: fp32, micro-batches of 4 (2 per optimizer step, so each rank takes one whole micro-batch)
TRAIN = {"precision": "fp32", "batch_size": 4, "grad_accum": 2, "warmup_ratio": 0.0, "log_every": 1, "threads": 1}


def tiny_bert(folder: Path, head) -> Path:
    return save_tiny_bert(folder, head, VOCAB)


def classification(tmp: Path) -> dict:
    rows = ["text,label"] + [f"great wonderful movie number {i},pos" if i % 2 else f"awful boring film number {i},neg"
                             for i in range(40)]
    (tmp / "reviews.csv").write_text("\n".join(rows) + "\n")
    return {"task": "classification", "model": {"name": str(tiny_bert(tmp / "enc", BertForSequenceClassification)),
                                                "max_length": 16},
            "data": {"train": str(tmp / "reviews.csv"), "eval_fraction": 0.25},
            "adapter": {"variant": "lora", "rank": 4},
            "train": {**TRAIN, "lr": 5e-3, "epochs": 2, "eval_every": 2}}


def qa(tmp: Path) -> dict:
    rows = [json.loads(line) for line in gzip.open(ROOT / "tunelab/data/vendored/squad2_train.jsonl.gz", "rt")]
    chosen = [r for r in rows if r["answers"]["text"]][:12]
    (tmp / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return {"task": "qa", "model": {"name": str(tiny_bert(tmp / "qa", BertForQuestionAnswering)), "max_length": 64},
            "data": {"train": str(tmp / "qa.jsonl"), "eval": str(tmp / "qa.jsonl")},
            "qa": {"doc_stride": 24}, "adapter": {"variant": "none"},
            "train": {**TRAIN, "lr": 1e-3, "max_steps": 4}, "eval": {"batch_size": 16}}


def sft(tmp: Path) -> dict:
    return {"task": "sft", "model": {"name": str(save_chat_model(tmp / "chat")), "max_length": 32},
            "data": {"train": str(write_toy_sft(tmp / "sft.jsonl", repeats=4)), "eval_fraction": 0.25},
            "adapter": {"variant": "lora", "rank": 4, "targets": ALL_LINEAR},
            "train": {**TRAIN, "lr": 5e-3, "max_steps": 4, "eval_every": 2}, "eval": {"batch_size": 4}}


def dpo(tmp: Path) -> dict:
    train, evaluation = write_preferences(tmp, repeats=1)
    return {"task": "dpo", "model": {"name": str(save_chat_model(tmp / "chat")), "max_length": 24},
            "data": {"train": str(train), "eval": str(evaluation)},
            "adapter": {"variant": "lora", "rank": 4, "targets": ALL_LINEAR},
            "train": {**TRAIN, "lr": 5e-3, "max_steps": 3}, "preference": {"beta": 0.1}}


def grpo(tmp: Path) -> dict:
    rows = [{"prompt": q, "answer": a} for q, a in TOY]
    (tmp / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    (tmp / "my_rewards.py").write_text(REWARD_FILE)
    return {"task": "grpo", "model": {"name": str(save_chat_model(tmp / "chat")), "max_length": 32},
            "data": {"train": str(tmp / "prompts.jsonl"), "eval": str(tmp / "prompts.jsonl")},
            "adapter": {"variant": "lora", "rank": 4, "targets": ALL_LINEAR},
            "train": {**TRAIN, "batch_size": 2, "lr": 5e-3, "max_steps": 3, "schedule": "constant"},
            "eval": {"batch_size": 4},
            "grpo": {"num_generations": 4, "max_new_tokens": 4, "temperature": 1.5, "answer": "exact",
                     "rewards": [{"name": f"{tmp / 'my_rewards.py'}:says_answer"}]}}


def lm(tmp: Path) -> dict:
    (tmp / "verse.txt").write_text("Shall I compare thee to a summer's day?\n" * 40)
    return {"task": "lm", "model": {"arch": {"type": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32,
                                             "block_size": 16}},
            "data": {"train": str(tmp / "verse.txt")},
            "lm": {"eval_windows": 16, "samples": 1, "sample_tokens": 8},
            "train": {**TRAIN, "lr": 1e-2, "max_steps": 6, "eval_every": 3}}


def vision(tmp: Path) -> dict:
    return {"task": "image_classification", "model": {"arch": {"type": "mlp", "hidden": [32]}},
            "data": {"dataset": "cifar10", "limit": 64, "eval_limit": 40},
            "vision": {"flip": False, "translate": 0, "misclassified": 4},
            "train": {**TRAIN, "optimizer": "sgd", "lr": 0.05, "max_steps": 6, "eval_every": 3}}


FAMILIES = {"classification": classification, "qa": qa, "sft": sft, "dpo": dpo, "grpo": grpo, "lm": lm,
            "vision": vision}


def write_recipe(tmp: Path, family: str) -> Path:
    recipe = {"name": family, "output_dir": str(tmp / "runs"), **FAMILIES[family](tmp)}
    path = tmp / f"{family}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_two_processes(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TUNELAB_QUIET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tunelab", "run", str(recipe), *args, "--nproc", "2"],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)


def only_run(folder: Path) -> Path:
    (run,) = [p for p in folder.iterdir() if p.is_dir()]
    return run


def losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


def weights(run: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted((run / "artifact").glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    return tensors


def files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_processes_train_like_one_with_the_same_global_batch(family, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_QUIET", "1")
    recipe = write_recipe(tmp_path, family)
    assert main(["run", str(recipe), "name=one"]) == 0
    done = run_two_processes(recipe, "name=two")
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = only_run(tmp_path / "runs" / "one"), only_run(tmp_path / "runs" / "two")
    first, second = (json.loads((run / "summary.json").read_text()) for run in (one, two))
    assert (first["processes"], second["processes"]) == (1, 2)
    assert second["steps"] == first["steps"] and second["train_samples"] == first["train_samples"]
    assert losses(two) == pytest.approx(losses(one), rel=1e-4, abs=1e-5)
    for name, value in first["metrics"].items():
        if isinstance(value, float) and not name.endswith(("seconds", "per_s", "share")):  # not timings
            assert second["metrics"][name] == pytest.approx(value, rel=1e-3, abs=1e-4), name
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-3, atol=1e-4, msg=name)
    assert files(two) - files(one) <= {"checkpoints/last/ranks.json"}  # rank 1 wrote nothing of its own
    assert files(one) <= files(two)


RESUMED = {"task": "image_classification", "model": {"arch": {"type": "fastcnn", "widths": [8, 16, 16]}},
           "data": {"dataset": "cifar10", "limit": 96, "eval_limit": 40},
           "vision": {"flip": True, "translate": 2, "misclassified": 4},
           "train": {**TRAIN, "optimizer": "sgd", "lr": 0.05, "max_steps": 60, "checkpoint_every": 4}}


def killed_and_resumed(recipe: Path, runs: Path) -> tuple[Path, Path]:
    """Run the recipe on 2 processes uninterrupted ("whole"), then again ("cut") killed once its checkpoint
    is past step 8 and resumed; returns both run folders."""
    assert run_two_processes(recipe, "name=whole").returncode == 0
    env = {**os.environ, "TUNELAB_QUIET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tunelab", "run", str(recipe), "name=cut", "--nproc", "2"],
                            env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    position = None
    while proc.poll() is None:
        found = list((runs / "cut").glob("*/checkpoints/last/position.json"))
        if found and json.loads(found[0].read_text())["step"] >= 8:
            os.killpg(proc.pid, signal.SIGKILL)
            position = found[0]
            break
        time.sleep(0.01)
    proc.wait()
    assert position is not None, "the run finished before it could be killed"
    cut = only_run(runs / "cut")
    assert not (cut / "summary.json").exists()
    assert len(json.loads((cut / "checkpoints" / "last" / "ranks.json").read_text())) == 2
    done = run_two_processes(recipe, "name=cut", "--resume", str(cut))
    assert done.returncode == 0, done.stderr[-3000:]
    return only_run(runs / "whole"), cut


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_result(tmp_path):
    """BatchNorm statistics, dropout-free augmentation draws per rank and every rank's RNG come back from
    the checkpoint: the resumed 2-process run ends with the uninterrupted 2-process run's weights."""
    recipe = tmp_path / "vision.yaml"
    recipe.write_text(yaml.safe_dump({"name": "vision", "output_dir": str(tmp_path / "runs"), **RESUMED}))
    whole, cut = killed_and_resumed(recipe, tmp_path / "runs")
    assert losses(cut) == losses(whole)
    ours, theirs = weights(cut), weights(whole)
    assert any("running_mean" in k for k in ours)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.fixture(scope="module")
def nproc_two(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The classification recipe and the weights `--nproc 2` trains from it (what other launchers must match)."""
    tmp_path = tmp_path_factory.mktemp("nproc2")
    recipe = write_recipe(tmp_path, "classification")
    assert run_two_processes(recipe, "name=torchrun").returncode == 0
    return recipe, weights(only_run(tmp_path / "runs" / "torchrun"))


def test_accelerate_launch_runs_the_same_two_process_training(nproc_two):
    """`accelerate launch --multi_gpu` starts torchrun's workers itself (gloo when there is no GPU): the same
    command trains exactly what `--nproc 2` does."""
    recipe, a = nproc_two
    tmp_path = recipe.parent
    env = {**os.environ, "TUNELAB_QUIET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    accelerate = Path(sys.executable).with_name("accelerate")
    done = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tunelab", "run", str(recipe),
                           "name=accelerate"], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    ours = only_run(tmp_path / "runs" / "accelerate")
    assert json.loads((ours / "summary.json").read_text())["processes"] == 2
    b = weights(ours)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_nodes_meeting_at_a_rendezvous_train_like_nproc_2(nproc_two):
    """Several machines: one torchrun per node with --nnodes/--node-rank and a c10d rendezvous endpoint
    (here both "nodes" are this machine, one process each); the result equals `--nproc 2`."""
    import socket

    recipe, a = nproc_two
    tmp_path = recipe.parent
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "TUNELAB_QUIET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--node-rank", str(rank), "--rdzv-backend", "c10d", "--rdzv-id", "tunelab-test",
                               "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "tunelab", "run", str(recipe),
                               "name=nodes"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    b = weights(only_run(tmp_path / "runs" / "nodes"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
