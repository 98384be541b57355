"""`disabled(model)`: every variant becomes exactly its base model (the DPO/GRPO reference), then back."""

from __future__ import annotations

import copy

import pytest
import torch

from tunelab.adapters.inject import ADAPTERS, adapter_modules, inject_adapters
from tunelab.adapters.spec import AdapterConfig
from tunelab.adapters.switch import disabled
from tunelab.errors import TunelabError

from .tiny import tiny_bert, train_steps

IDS = torch.randint(0, 100, (3, 6), generator=torch.Generator().manual_seed(2))
VARIANTS = sorted(ADAPTERS)  # every registered variant, so a new one is covered without editing this file


def adapted_and_reference(variant: str, extra: tuple[str, ...] = ()) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(model with trained adapters on every linear, deep copy of its base taken before injection).
    `extra`: base parameters trained too (they are not adapters, so disabled() leaves them trained)."""
    model = tiny_bert()
    reference = copy.deepcopy(model)
    inject_adapters(model, AdapterConfig(variant=variant, rank=4, init="small", dropout=0.1,
                                         targets=["query", "key", "value", "dense"], trainable_extra=list(extra)))
    train_steps(model, IDS, steps=3)
    return model, reference


@pytest.mark.parametrize("variant", VARIANTS)
def test_disabled_is_exactly_the_base_model_and_exit_restores(variant: str) -> None:
    model, reference = adapted_and_reference(variant)
    with torch.no_grad():
        adapted = model(IDS).logits
        base = reference(IDS).logits
        assert not torch.allclose(adapted, base, atol=1e-3)  # the adapters do change the output
        with disabled(model) as same:
            assert same is model
            off = model(IDS).logits
            model.train()  # adapter dropout (p = 0.1) must not run either
            off_train = model(IDS).logits
            model.eval()
        after = model(IDS).logits
    assert torch.equal(off, base) and torch.equal(off_train, base)
    assert torch.equal(after, adapted)


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_gradient_reaches_adapters_inside_disabled(variant: str) -> None:
    model, _ = adapted_and_reference(variant, extra=("classifier",))
    model.zero_grad(set_to_none=True)
    with disabled(model):
        loss = torch.nn.functional.cross_entropy(model(IDS).logits, torch.tensor([0, 1, 2]))
        loss.backward()
    adapter_grads = [p.grad for mod in adapter_modules(model).values() for p in mod.adapter_parameters().values()]
    assert adapter_grads and all(g is None for g in adapter_grads)
    # parameters outside the adapters (trainable_extra) are not switched: documented in switch.py
    assert model.classifier.weight.grad is not None


def test_exit_on_exception_and_nesting_restore_the_previous_state() -> None:
    model, _ = adapted_and_reference("dora")
    states = lambda: {mod.enabled for mod in adapter_modules(model).values()}  # noqa: E731
    with pytest.raises(RuntimeError, match="boom"), disabled(model):
        assert states() == {False}
        raise RuntimeError("boom")
    assert states() == {True}
    with disabled(model):
        with disabled(model):
            assert states() == {False}
        assert states() == {False}  # the inner exit must not switch the outer block's adapters back on
    assert states() == {True}
    first = next(iter(adapter_modules(model).values()))
    first.enabled = False  # switched off by someone else before: stays off afterwards
    with disabled(model):
        pass
    others = [mod.enabled for mod in adapter_modules(model).values() if mod is not first]
    assert not first.enabled and len(others) == 12 and all(others)


def test_disabled_on_a_model_without_adapters_is_an_error() -> None:
    with pytest.raises(TunelabError, match="has no adapters to switch off"), disabled(tiny_bert()):
        pass
