"""The lm task end to end on small text files: a tiny GPT overfits a short text, an interrupted run
resumed with --resume ends bit-identically, a finished run reloads through load_run_model with the same
val loss, samples are seeded, and `tunelab generate` prints one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.interrupt import interrupted_run
from tunelab.cli import main
from tunelab.models.artifact import load_run_model
from tunelab.recipes import load_recipe
from tunelab.runner import run_recipe
from tunelab.tasks.lm import LMTask
from tunelab.train.batching import epoch_rng

VERSE = ("Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
         "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date.\n")
TINY_ARCH = "model.arch={type: gpt, n_layer: 1, n_head: 2, n_embd: 32, block_size: 16}"


@pytest.fixture
def verse_file(tmp_path):
    path = tmp_path / "verse.txt"
    path.write_text(VERSE * 12, encoding="utf-8")
    return path


def tiny_config(root, text, name="lm", *extra):
    return load_recipe("configs/shakespeare_char_nanogpt.yaml", [
        "data.dataset=null", f"data.train={text}", TINY_ARCH, "train.batch_size=16", "train.max_steps=40",
        "train.eval_every=20", "train.warmup_ratio=0.0", "train.threads=1", "lm.eval_windows=32",
        "lm.samples=2", "lm.sample_tokens=40", f"output_dir={root}", f"name={name}", *extra])


def test_a_tiny_gpt_overfits_a_short_text(tmp_path, verse_file, one_thread):
    cfg = tiny_config(tmp_path, verse_file, "overfit", "train.max_steps=400", "train.lr=1e-2",
                      f"data.eval={verse_file}", "train.eval_every=null")
    summary = run_recipe(cfg)[0].summary
    # a uniform guess over the verse's ~40 symbols costs ln 40 ≈ 3.7 nats; the memorised verse almost nothing
    assert summary["metrics"]["eval_loss"] < 0.4
    assert summary["metrics"]["bits_per_char"] == pytest.approx(summary["metrics"]["eval_loss"] / np.log(2))
    assert summary["tokens_per_s"] > 0


def test_batches_are_random_windows_and_a_pure_function_of_the_generator(tmp_path, verse_file):
    task = LMTask(tiny_config(tmp_path, verse_file))
    task.prepare_data(None, "", None)
    first, again = task.train_batches(epoch_rng(0, 3)), task.train_batches(epoch_rng(0, 3))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = task.train_batches(epoch_rng(0, 4))
    assert not np.array_equal(first[0], other[0])
    covered = sum(len(b) for b in first) * task.block_size  # an epoch reads about the training tokens once
    assert len(task.train_ids) - 16 * task.block_size <= covered <= len(task.train_ids)
    batch = task.collate(first[0])
    assert torch.equal(batch["input_ids"][:, 1:], batch["targets"][:, :-1])  # targets: inputs shifted by one
    start = int(first[0][0])
    assert task.tokenizer.decode(batch["input_ids"][0]) == (VERSE * 12)[:-len(VERSE * 12) // 5][start:start + 16]


def test_the_split_is_by_position(tmp_path, verse_file):
    task = LMTask(tiny_config(tmp_path, verse_file))
    train, held = task.texts()
    text = VERSE * 12
    assert train + held == text and len(held) == int(len(text) * 0.1)  # the recipe's eval_fraction
    seeded = LMTask(tiny_config(tmp_path, verse_file, "s", "data.split_seed=3"))
    train3, held3 = seeded.texts()
    assert len(held3) == len(held) and held3 in text and held3 != held and len(train3) == len(train)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_interrupted_run_resumes_to_identical_result(tmp_path, verse_file, monkeypatch, one_thread, optimizer):
    extra = ["train.checkpoint_every=10", "model.arch.dropout=0.1", f"train.optimizer={optimizer}"]
    full = run_recipe(tiny_config(tmp_path, verse_file, "full", *extra))[0]
    interrupted_run(monkeypatch, LMTask, 25, lambda: run_recipe(tiny_config(tmp_path, verse_file, "cut", *extra)))
    (run_dir,) = list((tmp_path / "cut").iterdir())
    assert json.loads((run_dir / "checkpoints" / "last" / "position.json").read_text())["step"] == 20
    resumed = run_recipe(tiny_config(tmp_path, verse_file, "cut", *extra), resume=run_dir)[0]
    assert resumed.summary["steps"] == 40
    assert resumed.summary["metrics"] == full.summary["metrics"]
    ours, theirs = (load_file(str(d / "artifact" / "model.safetensors")) for d in (run_dir, full.run_dir))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert (run_dir / "samples.txt").read_text() == (full.run_dir / "samples.txt").read_text()


@pytest.fixture
def finished_run(tmp_path, verse_file, one_thread):
    return run_recipe(tiny_config(tmp_path, verse_file, "done"))[0]


def test_reload_gives_the_same_val_loss_and_seeded_samples(finished_run, capsys):
    loaded = load_run_model(finished_run.run_dir)
    loaded.task.prepare_data(None, "", None)
    again = loaded.task.evaluate(loaded.model)
    assert again["eval_loss"] == pytest.approx(finished_run.summary["metrics"]["eval_loss"], abs=1e-6)
    samples = (finished_run.run_dir / "samples.txt").read_text()
    assert samples.count("--- sample") == 2

    args = ["generate", str(finished_run.run_dir), "--prompt", "Thou", "--max-new-tokens", "30", "--seed"]
    assert main([*args, "5"]) == 0
    first = capsys.readouterr().out
    assert main([*args, "5"]) == 0
    assert capsys.readouterr().out == first and first.startswith("Thou") and len(first.rstrip("\n")) == 34
    assert main([*args, "6"]) == 0
    assert capsys.readouterr().out != first


def test_unknown_character_in_the_prompt_is_one_line(finished_run, capsys):
    assert main(["generate", str(finished_run.run_dir), "--prompt", "Zebra€"]) == 2
    err = capsys.readouterr().err
    assert "not in the tokenizer's vocabulary" in err and err.count("\n") == 1


def test_bad_arch_key_is_one_line(tmp_path, verse_file, capsys):
    code = main(["run", "configs/shakespeare_char_nanogpt.yaml", "data.dataset=null", f"data.train={verse_file}",
                 "model.arch.n_layers=2", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "model.arch.n_layers: unknown setting" in err and err.count("\n") == 1
