"""The rest of the task/loop contract: model-dependent batches, eval.metric checked before training,
one list of task heads, token caches keyed by the tokenizer and its chat template, and layering."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.recipes import validate
from tunelab.rundir import RunDir
from tunelab.train.loop import train
from tunelab.train.precision import Precision

from .toy_task import ToyTask

FP32 = Precision("fp32", "cpu")


class RolloutTask(ToyTask):
    """Labels come from the current model (a stand-in for GRPO rollouts): recorded how each was built."""

    batches_need_model = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def make_batch(self, model, index, step):
        batch = self.collate(index)
        logits = model(batch["x"])
        self.seen.append({"step": step, "training": model.training, "grad": torch.is_grad_enabled(),
                          "requires_grad": logits.requires_grad})
        return {"x": batch["x"], "labels": logits.argmax(-1)}

    def loss_fn(self, model, batch):
        assert model.training  # back in train mode for the update
        return super().loss_fn(model, batch)


def test_model_dependent_batches_are_built_without_grad_in_eval_mode(tmp_path):
    task = RolloutTask({"train.max_steps": 3, "train.grad_accum": 2})
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    train(task.build_model(), task, task.config.train, run, FP32, torch.device("cpu"))
    assert [s["step"] for s in task.seen] == [0, 0, 1, 1, 2, 2]
    assert not any(s["training"] or s["grad"] or s["requires_grad"] for s in task.seen)


def test_unknown_eval_metric_fails_before_the_first_step(tmp_path):
    task = ToyTask({"train.max_steps": 2, "train.eval_every": 1})
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    with pytest.raises(TunelabError, match=r"eval.metric: 'bleu' is not a metric the toy task reports.*accuracy"):
        train(task.build_model(), task, task.config.train, run, FP32, torch.device("cpu"), metric="bleu")
    assert run.metrics() == []


def test_sft_recipe_with_final_only_metric_is_refused_by_the_runner():
    from tunelab.runner import load_task

    config = validate({"task": "sft", "data": {"dataset": "gsm8k_sft"}, "eval": {"metric": "bleu"}})
    with pytest.raises(TunelabError, match=r"eval.metric: 'bleu'.*eval_loss, perplexity, token_accuracy"):
        load_task(config)


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.pre_classifier = nn.Linear(4, 4)
        self.classifier = nn.Linear(4, 2)
        self.qa_outputs = nn.Linear(4, 2)
        self.lm_head = nn.Linear(4, 8)


def test_runner_budget_and_optimizer_agree_on_task_heads():
    from tunelab.adapters.budget import trainable_breakdown
    from tunelab.models.heads import head_patterns_in, is_head_parameter
    from tunelab.train.optim import param_groups

    model = Heads()
    names = [n for n, _ in model.named_parameters()]
    patterns = head_patterns_in(names)
    head_names = {n for n in names if is_head_parameter(n)}
    heads = ("pre_classifier", "classifier", "qa_outputs")
    assert head_names == {f"{m}.{p}" for m in heads for p in ("weight", "bias")}
    assert len(patterns) == 3
    counts = trainable_breakdown(model)
    assert counts["head"] == sum(p.numel() for n, p in model.named_parameters() if n in head_names) == 40
    cfg = validate({"data": {"dataset": "x"}, "train": {"lr": 1e-3, "head_lr": 1e-2}}).train
    fast = {id(p) for g in param_groups(model, cfg) if g["lr"] == 1e-2 for p in g["params"]}
    assert fast == {id(p) for n, p in model.named_parameters() if n in head_names}


def test_token_cache_is_invalidated_by_an_edited_chat_template(tmp_path):
    from tests.tasks.tiny_chat import chat_tokenizer
    from tunelab.data.chat_tokens import encode_conversations
    from tunelab.train.tokenize_cache import tokenizer_fingerprint

    conversations = [[{"role": "user", "content": "say hi"}, {"role": "assistant", "content": "hello"}]]
    tokenizer = chat_tokenizer()
    before_id = tokenizer_fingerprint(tokenizer)
    ids, _, _ = encode_conversations(tokenizer, conversations, 64, tmp_path, before_id)
    tokenizer.chat_template = "### " + tokenizer.chat_template  # a user edits the template in the model folder
    after_id = tokenizer_fingerprint(tokenizer)
    assert after_id != before_id
    for tokenizer_id in (after_id, before_id):  # also when a caller passes a stale tokenizer id
        edited, _, _ = encode_conversations(tokenizer, conversations, 64, tmp_path, tokenizer_id)
        assert len(edited[0]) == len(ids[0]) + 1  # the new "###" token is there, not the cached ids
    assert len(list(tmp_path.glob("sft-*.npz"))) == 3


def test_reading_a_recipe_does_not_import_torch():
    code = "import sys, tunelab.config, tunelab.recipes; print(json.dumps(sorted(m for m in ('torch', " \
           "'transformers') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_compare_and_report_read_run_folders_without_the_training_stack(tmp_path):
    from tests.report.fabricate import classification_metrics, make_run

    for i, acc in enumerate((0.8, 0.9)):
        make_run(tmp_path / "group", f"run{i}", classification_metrics(acc), {"adapter.rank": 4 * (i + 1)})
    code = ("import sys, json; from tunelab.cli import main; "
            f"main(['compare', {str(tmp_path / 'group' / '*')!r}]); main(['report', {str(tmp_path / 'group')!r}]); "
            "print(json.dumps(sorted(m for m in ('torch', 'transformers') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert (tmp_path / "group" / "report.html").is_file()


def test_epoch_order_comes_from_seed_and_epoch():
    """Through the loop: seed 0's second epoch is not seed 1's first."""
    from tunelab.train.batching import epoch_rng

    task = ToyTask()
    orders = {(s, e): np.concatenate(task.train_batches(epoch_rng(s, e))) for s in (0, 1) for e in (0, 1)}
    assert not np.array_equal(orders[(0, 1)], orders[(1, 0)])
