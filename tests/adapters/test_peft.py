"""Our lora/dora against PEFT on the same weights: same outputs, and PEFT can load what we export."""

from __future__ import annotations

import peft
import pytest
import torch

from tunelab.adapters import AdapterConfig, LayerRule, adapter_modules, export_peft, inject_adapters

from .tiny import tiny_bert, train_steps

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
IDS = torch.randint(0, 100, (3, 6), generator=torch.Generator().manual_seed(2))


def peft_twin(use_dora: bool, dropout: float) -> torch.nn.Module:
    """A PEFT model on the tiny BERT with B and m moved off their init, so the comparison is not trivial."""
    model = peft.get_peft_model(tiny_bert(), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["query", "value"], use_dora=use_dora, lora_dropout=dropout))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "magnitude" in name:
                param.add_(torch.randn_like(param) * 0.5)
    return model


def copy_from_peft(peft_model: torch.nn.Module, ours: torch.nn.Module) -> None:
    peft_modules = dict(peft_model.base_model.model.named_modules())
    with torch.no_grad():
        for name, mod in adapter_modules(ours).items():
            mod.A.copy_(peft_modules[name].lora_A["default"].weight)
            mod.B.copy_(peft_modules[name].lora_B["default"].weight)
            if mod.variant == "dora":
                mod.m.copy_(peft_modules[name].lora_magnitude_vector["default"].weight)


@pytest.mark.parametrize("variant", ["lora", "dora"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_forward_matches_peft(variant: str, dropout: float) -> None:
    theirs = peft_twin(variant == "dora", dropout)
    ours = tiny_bert()
    inject_adapters(ours, AdapterConfig(variant=variant, rank=4, alpha=8, dropout=dropout))
    copy_from_peft(theirs, ours)
    theirs.train()
    ours.train()
    torch.manual_seed(7)  # same seed, same dropout call order: identical masks
    expected = theirs(IDS).logits
    torch.manual_seed(7)
    got = ours(IDS).logits
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        assert torch.allclose(ours(IDS).logits, theirs(IDS).logits, atol=1e-5, rtol=0)
        if dropout:  # the train-mode comparison really exercised dropout
            assert not torch.allclose(ours(IDS).logits, got, atol=1e-4)


def test_dora_gradients_match_peft() -> None:
    theirs = peft_twin(True, 0.0)
    ours = tiny_bert()
    inject_adapters(ours, AdapterConfig(variant="dora", rank=4, alpha=8))
    copy_from_peft(theirs, ours)
    for model in (theirs, ours):
        model(IDS).logits.pow(2).sum().backward()
    peft_modules = dict(theirs.base_model.model.named_modules())
    for name, mod in adapter_modules(ours).items():
        twin = peft_modules[name]
        assert torch.allclose(mod.B.grad, twin.lora_B["default"].weight.grad, atol=1e-5)
        assert torch.allclose(mod.A.grad, twin.lora_A["default"].weight.grad, atol=1e-5)
        assert torch.allclose(mod.m.grad, twin.lora_magnitude_vector["default"].weight.grad, atol=1e-5)


def test_zero_norm_rows_stay_finite_where_peft_gives_nan() -> None:
    def zero_a_row(model: torch.nn.Module) -> None:
        with torch.no_grad():
            model.bert.encoder.layer[0].attention.self.query.weight[5].zero_()

    base = tiny_bert()
    zero_a_row(base)
    theirs = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query"],
                                                       use_dora=True))
    ours = tiny_bert()
    zero_a_row(ours)
    inject_adapters(ours, AdapterConfig(variant="dora", rank=4, alpha=8, targets=["query"]))
    name = "bert.encoder.layer.0.attention.self.query"
    x = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.isnan(theirs.base_model.model.get_submodule(name)(x)[:, 5]).all()  # 0 / 0
        out = adapter_modules(ours)[name](x)
        assert torch.isfinite(out).all()
        assert torch.equal(out[:, 5], ours.get_submodule(name).bias[5].expand(2))  # m = 0: output = bias


@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_export_loads_in_peft_with_identical_logits(variant: str, tmp_path) -> None:
    ours = tiny_bert()
    cfg = AdapterConfig(variant=variant, rank=4, alpha=8, trainable_extra=["classifier"],
                        layers=[LayerRule(pattern=r"layer\.1\.attention\.self\.value", rank=2, alpha=3.0)])
    inject_adapters(ours, cfg)
    train_steps(ours, IDS)
    out_dir = export_peft(ours, tmp_path / "peft", base_name="tiny-bert")
    loaded = peft.PeftModel.from_pretrained(tiny_bert(), out_dir).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(IDS).logits, ours(IDS).logits, atol=1e-5, rtol=0)
    assert sorted(p.name for p in out_dir.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_export_refuses_unmergeable_variants(tmp_path) -> None:
    from tunelab.errors import TunelabError

    ours = tiny_bert()
    inject_adapters(ours, AdapterConfig(variant="ddora", rank=4))
    with pytest.raises(TunelabError, match="lora or dora"):
        export_peft(ours, tmp_path / "x", base_name="tiny")
