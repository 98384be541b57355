"""One table over every adapter variant: the contract each must keep (STYLE rule 12)."""

from __future__ import annotations

import re

import pydantic
import pytest
import torch

from tunelab.adapters import ADAPTERS, AdapterConfig, LayerRule, adapter_modules, inject_adapters, merge_adapters
from tunelab.errors import TunelabError

from .tiny import tiny_bert, train_steps

# variant, base output preserved at init, mergeable, its own parameter names
CASES = [
    ("lora", True, True, {"A", "B"}),
    ("dora", True, True, {"A", "B", "m"}),
    ("dora_scaled", False, False, {"A", "B", "m", "scale"}),
    ("ddora", False, False, {"A", "B", "m_in", "scale_in", "m_out", "scale_out"}),
]
IDS = torch.randint(0, 100, (3, 6), generator=torch.Generator().manual_seed(1))


def normalize(v: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(v, dim=-1, eps=1e-6)


def heads(scale: torch.Tensor, features: int) -> torch.Tensor:
    return scale.repeat_interleave(features // scale.numel())


# The docstring equations written naively, (out, in) matrices and all: the fast forwards must agree.
EQUATIONS = {
    "lora": lambda a, x: a.base(x) + a.scaling * x @ (a.B @ a.A).T,
    "dora": lambda a, x: (a.m * (x @ (a.base.weight + a.scaling * a.B @ a.A).T)
                          / (a.base.weight + a.scaling * a.B @ a.A).norm(dim=1).detach() + a.base.bias),
    "dora_scaled": lambda a, x: a.base(x) + heads(a.scale, 32) * a.m * normalize(a.scaling * x @ (a.B @ a.A).T),
    "ddora": lambda a, x: a.base(x) + heads(a.scale_out, 32) * a.m_out * normalize(
        a.scaling * (x * heads(a.scale_in, 32) * a.m_in) @ (a.B @ a.A).T),
}


def test_table_covers_registry() -> None:
    assert {case[0] for case in CASES} == set(ADAPTERS) == set(EQUATIONS)


@pytest.mark.parametrize(("variant", "preserves", "mergeable", "own"), CASES)
def test_fast_forward_matches_equation(variant: str, preserves: bool, mergeable: bool, own: set[str]) -> None:
    model = tiny_bert()
    inject_adapters(model, AdapterConfig(variant=variant, rank=4, init="small"))
    train_steps(model, IDS)  # B, m and scales away from init
    adapter = model.bert.encoder.layer[1].attention.self.value
    x = torch.randn(2, 5, 32)
    fast, naive = adapter(x), EQUATIONS[variant](adapter, x)
    assert torch.allclose(fast, naive, atol=1e-5, rtol=1e-5)
    params = list(adapter.adapter_parameters().values())
    for got, want in zip(torch.autograd.grad(fast.pow(2).sum(), params),
                         torch.autograd.grad(naive.pow(2).sum(), params), strict=True):
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("variant", "preserves", "mergeable", "own"), CASES)
def test_base_output_at_init(variant: str, preserves: bool, mergeable: bool, own: set[str]) -> None:
    base = tiny_bert()
    model = tiny_bert()
    inject_adapters(model, AdapterConfig(variant=variant, rank=4))
    with torch.no_grad():
        same = torch.allclose(model(IDS).logits, base(IDS).logits, atol=1e-6, rtol=0)
    assert same == preserves  # scaled variants start from a random m by design (docs/adapters.md)


@pytest.mark.parametrize(("variant", "preserves", "mergeable", "own"), CASES)
def test_merged_equals_unmerged(variant: str, preserves: bool, mergeable: bool, own: set[str]) -> None:
    model = tiny_bert()
    inject_adapters(model, AdapterConfig(variant=variant, rank=4, init="small"))
    train_steps(model, IDS)
    with torch.no_grad():
        before = model(IDS).logits
    if not mergeable:
        with pytest.raises(TunelabError, match="cannot be merged"):
            merge_adapters(model)
        assert adapter_modules(model)  # nothing was replaced
        return
    merged = merge_adapters(model)
    assert len(merged) == 4 and not adapter_modules(model)
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, torch.nn.Linear)
    with torch.no_grad():
        assert torch.allclose(model(IDS).logits, before, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("variant", "preserves", "mergeable", "own"), CASES)
def test_gradient_reaches_only_adapters_and_extra(variant: str, preserves: bool, mergeable: bool,
                                                  own: set[str]) -> None:
    model = tiny_bert()
    inject_adapters(model, AdapterConfig(variant=variant, rank=4, trainable_extra=["classifier"]))
    model.train()
    loss = torch.nn.functional.cross_entropy(model(IDS).logits, torch.tensor([0, 1, 2]))
    loss.backward()
    names = [name for name, _ in model.named_parameters()]
    own_pattern = re.compile(rf"\.(query|value)\.({'|'.join(own)})$")
    intended = {n for n in names if own_pattern.search(n)} | {"classifier.weight", "classifier.bias"}
    assert len(intended) == 2 * 2 * len(own) + 2
    assert {n for n, p in model.named_parameters() if p.grad is not None} == intended
    assert {n for n, p in model.named_parameters() if p.requires_grad} == intended


@pytest.mark.parametrize(("variant", "preserves", "mergeable", "own"), CASES)
def test_state_dict_round_trip(variant: str, preserves: bool, mergeable: bool, own: set[str]) -> None:
    cfg = AdapterConfig(variant=variant, rank=4, init="small")
    trained, fresh = tiny_bert(), tiny_bert()
    inject_adapters(trained, cfg)
    train_steps(trained, IDS)
    inject_adapters(fresh, cfg)
    fresh.load_state_dict(trained.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(IDS).logits, trained(IDS).logits)


@pytest.mark.parametrize(("variant", "preserves", "mergeable", "own"), CASES)
def test_param_count_formula_matches_live_modules(variant: str, preserves: bool, mergeable: bool,
                                                  own: set[str]) -> None:
    model = tiny_bert()
    inject_adapters(model, AdapterConfig(variant=variant, rank=3, targets=["query", "intermediate"]))
    for mod in adapter_modules(model).values():
        live = sum(p.numel() for p in mod.adapter_parameters().values())
        assert set(mod.adapter_parameters()) == own
        assert live == ADAPTERS[variant].param_count(mod.in_features, mod.out_features, mod.settings)


BAD_SPECS = [
    ({"targets": ["qury"]}, "adapter.targets: pattern 'qury' matches no nn.Linear in BertForSequenceClassification"),
    ({"targets": ["("]}, "adapter.targets: invalid regex '('"),
    ({"exclude": ["[a-"]}, "adapter.exclude: invalid regex"),
    ({"layers": [LayerRule(pattern="layer\\.9\\.")]}, "adapter.layers[0].pattern"),
    ({"layers": [LayerRule(pattern="query", variant="bora")]}, "unknown variant 'bora'"),
    ({"trainable_extra": ["classifer"]}, "adapter.trainable_extra: pattern 'classifer' matches no parameter"),
    ({"variant": "ddora", "num_heads": 5}, "features do not split into whole heads"),
    ({"max_trainable": 10}, "2,048 trainable parameters exceed adapter.max_trainable=10 (adapters 2,048, head 0"),
    ({"plan": "fill"}, "adapter.plan=fill needs adapter.max_trainable"),
    ({"plan": "fill", "max_trainable": 50}, "but rank 1 on 4 layers needs 256"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_SPECS)
def test_bad_specs_give_one_line_error_and_leave_model_alone(kwargs: dict, message: str) -> None:
    model = tiny_bert()
    num_heads = kwargs.pop("num_heads", None)
    with pytest.raises(TunelabError) as err:
        inject_adapters(model, AdapterConfig(**kwargs), num_heads=num_heads)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not adapter_modules(model)  # all validation happens before any module is swapped
    assert all(p.requires_grad for p in model.parameters())


def test_rank_zero_and_unknown_keys_rejected_by_schema() -> None:
    with pytest.raises(pydantic.ValidationError):
        AdapterConfig(rank=0)
    with pytest.raises(pydantic.ValidationError):
        AdapterConfig(rnak=4)


def test_inject_twice_is_an_error() -> None:
    model = tiny_bert()
    inject_adapters(model, AdapterConfig())
    with pytest.raises(TunelabError, match="already has adapters"):
        inject_adapters(model, AdapterConfig())
