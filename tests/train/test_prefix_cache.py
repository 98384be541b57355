"""The frozen-prefix cache must not change the computation: same loss and gradients as the full
forward when dropout is off."""

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from tunelab.train.batching import pad_batch
from tunelab.train.prefix_cache import build_prefix_cache, find_backbone, first_trainable_layer


def tiny_bert():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        num_labels=3)
    return BertForSequenceClassification(config)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    ids = [rng.integers(1, 100, size=n) for n in rng.integers(3, 12, size=24)]
    labels = rng.integers(0, 3, size=24)

    def collate(index):
        input_ids, mask = pad_batch([ids[i] for i in index], 0)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": torch.as_tensor(labels[index])}

    lengths = np.array([len(x) for x in ids])
    batches = [np.arange(i, min(i + 8, 24)) for i in range(0, 24, 8)]
    return collate, lengths, batches


def loss_of(model, batch):
    model.zero_grad()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    loss = torch.nn.functional.cross_entropy(out.logits, batch["labels"])
    loss.backward()
    return float(loss.detach())


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("trainable_from", [2, 4])  # top two layers + head, or head only
def test_cache_gives_same_loss_and_grads(data, trainable_from):
    collate, lengths, batches = data
    model = tiny_bert()
    for name, param in model.named_parameters():
        top = any(f"layer.{i}." in name for i in range(trainable_from, 4))
        param.requires_grad = top or name.startswith("classifier") or name.startswith("bert.pooler")
    assert first_trainable_layer(find_backbone(model)) == trainable_from
    cache = build_prefix_cache(model, batches, collate, lengths, lambda: torch.autocast("cpu", enabled=False),
                               2**30)
    assert cache is not None and cache.k == trainable_from
    index = np.array([3, 17, 5, 20, 11])  # a mixed-length batch in shuffled order
    batch = collate(index)
    model.train()
    expected_loss = loss_of(model, batch)
    expected_grads = grads(model)
    with cache.active(index, torch.device("cpu")):
        cached_loss = loss_of(model, batch)
    cached_grads = grads(model)
    assert cached_loss == pytest.approx(expected_loss, abs=1e-5)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(cached_grads[name], grad, atol=1e-5, rtol=1e-4)
    # the model is restored afterwards: the full forward runs all layers again
    assert len(find_backbone(model).layers) == 4 and loss_of(model, batch) == pytest.approx(expected_loss)


def test_no_cache_when_embeddings_or_bottom_layer_train(data):
    collate, lengths, batches = data
    model = tiny_bert()  # everything trainable
    assert build_prefix_cache(model, batches, collate, lengths, lambda: torch.autocast("cpu", enabled=False),
                              2**30) is None


def test_cached_eval_split_gives_the_logits_of_the_full_forward(data):
    collate, lengths, batches = data
    model = tiny_bert()
    for name, param in model.named_parameters():
        param.requires_grad = "layer.3." in name or name.startswith("classifier")
    off = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    eval_index = np.array([2, 9, 14, 21])  # an "eval split" of four examples, cached on its own
    eval_lengths = lengths[eval_index]

    def eval_collate(index):
        return collate(eval_index[index])

    cache = build_prefix_cache(model, batches, collate, lengths, off, 2**30,
                               eval_inputs=([np.arange(4)], eval_collate, eval_lengths))
    prefix = cache.eval_prefix(torch.device("cpu"))
    model.eval()
    batch = eval_collate(np.array([3, 0, 1]))
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with prefix(np.array([3, 0, 1])):
            cached = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-4)
    assert cache.nbytes == 4 * 32 * (int(lengths.sum()) + int(eval_lengths.sum()))
