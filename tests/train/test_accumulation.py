"""Exact gradient accumulation: micro-batches 2 x 4 give the update of one batch of 8.

The step's loss is the mean over all its loss items (target tokens for SFT, examples for
classification), not a mean of per-micro-batch means: with rows of different lengths the two differ,
which is the accumulation bug transformers fixed in 4.46 (num_items_in_batch)."""

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from tests.eval.tiny_lm import random_llama
from tunelab.recipes import validate
from tunelab.tasks.classification import ClassificationTask
from tunelab.tasks.sft import SFTTask
from tunelab.train.batching import TokenizedSet
from tunelab.train.lm_loss import IGNORE
from tunelab.train.loop import accumulate
from tunelab.train.precision import Precision

from .toy_task import ToyTask

FP32 = Precision("fp32", "cpu")
CPU = torch.device("cpu")


def gradients(model, task, group):
    model.zero_grad(set_to_none=True)
    loss, logged = accumulate(model, task, group, 0, FP32, None, CPU)
    return loss, logged, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_update(model, task, rows, split=None):
    split = rows // 2 if split is None else split
    whole = [np.arange(rows)]
    halves = [np.arange(split), np.arange(split, rows)]
    loss_1, _, grads_1 = gradients(model, task, whole)
    loss_2, _, grads_2 = gradients(model, task, halves)
    assert loss_2 == pytest.approx(loss_1, rel=1e-6)
    assert grads_1.keys() == grads_2.keys() and grads_1
    for name in grads_1:
        torch.testing.assert_close(grads_2[name], grads_1[name], atol=1e-5, rtol=1e-5, msg=name)


def sft_task(lengths, answer_lengths, vocab=40):
    task = SFTTask(validate({"task": "sft", "data": {"dataset": "x"}}))
    rng = np.random.default_rng(0)
    for n, answer in zip(lengths, answer_lengths, strict=True):
        ids = rng.integers(5, vocab, size=n)
        targets = np.full(n, IGNORE)
        targets[n - answer - 1:n - 1] = ids[n - answer:]
        task.train_ids.append(ids)
        task.train_targets.append(targets)
    return task


def test_sft_two_micro_batches_of_four_equal_one_batch_of_eight():
    # first half: short rows with 1-2 answer tokens; second half: long rows with many
    task = sft_task([6, 5, 7, 6, 30, 28, 31, 29], [1, 2, 1, 2, 20, 18, 22, 19])
    model = random_llama(40, seed=0)
    assert_same_update(model, task, 8)


def test_classification_two_micro_batches_of_four_equal_one_batch_of_eight():
    task = ClassificationTask(validate({"data": {"dataset": "x"}}))
    rng = np.random.default_rng(1)
    lengths = [5, 9, 12, 7, 20, 3, 15, 11]
    task.train_set = TokenizedSet([rng.integers(5, 50, size=n) for n in lengths], rng.integers(0, 3, size=8))
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=3, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    assert_same_update(BertForSequenceClassification(config), task, 8)
    assert_same_update(BertForSequenceClassification(config), task, 8, split=3)  # 3 rows weigh 3/8, not 1/2


def test_uneven_micro_batches_weigh_by_examples():
    """3 + 5 rows: the 3-row micro-batch must weigh 3/8, not 1/2."""
    task = ToyTask({"train.precision": "fp32"})
    torch.manual_seed(0)
    model = task.build_model().eval()  # no dropout: both passes see the same function
    _, _, whole = gradients(model, task, [np.arange(8)])
    _, _, split = gradients(model, task, [np.arange(3), np.arange(3, 8)])
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], atol=1e-6, rtol=1e-5)


class ScalarTask(ToyTask):
    """Logs the share of label-1 examples in each micro-batch: the step's value must be over all 8."""

    def loss_fn(self, model, batch):
        loss, _ = super().loss_fn(model, batch)
        return loss, {"positive_share": float(batch["labels"].float().mean())}


def test_logged_scalars_are_weighted_over_the_step():
    task = ScalarTask()
    model = task.build_model().eval()
    labels = task.y.numpy()
    index = np.concatenate([np.flatnonzero(labels == 1)[:2], np.flatnonzero(labels == 0)[:6]])
    _, logged, _ = gradients(model, task, [index[:2], index[2:]])  # shares 1.0 and 0.0
    assert logged["positive_share"] == pytest.approx(2 / 8)
    assert logged["tokens"] == 8
