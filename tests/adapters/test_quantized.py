"""Adapters on bitsandbytes 4-bit / 8-bit layers (QLoRA), on the CPU: float adapters, dequantised math."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from tunelab.adapters.inject import ADAPTERS, adapter_modules, inject_adapters
from tunelab.adapters.lora import LoRALinear
from tunelab.adapters.lowrank import ModuleSettings, dense_weight
from tunelab.adapters.spec import AdapterConfig
from tunelab.errors import TunelabError

BITS = ["4bit", "8bit"]
IN, OUT = 64, 48


def float_linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(IN, OUT)


def quantized(bits: str, linear: nn.Linear) -> nn.Linear:
    """A bitsandbytes copy of `linear` on the CPU, quantised on `.to()` as from_pretrained does it."""
    import bitsandbytes as bnb
    if bits == "4bit":
        layer = bnb.nn.Linear4bit(IN, OUT, compute_dtype=torch.float32, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                         compress_statistics=True)
    else:
        layer = bnb.nn.Linear8bitLt(IN, OUT, has_fp16_weights=False)
        layer.weight = bnb.nn.Int8Params(linear.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
    layer.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    return layer.to("cpu")


def quantized_model(bits: str, variant: str, init: str = "small") -> nn.Module:
    model = nn.Sequential(OrderedDict(proj=quantized(bits, float_linear())))
    inject_adapters(model, AdapterConfig(variant=variant, rank=4, init=init, targets=["proj"],
                                         scale_granularity="feature"))
    return model


@pytest.mark.parametrize("bits", BITS)
def test_dense_weight_is_the_weight_the_quantised_layer_multiplies_by(bits: str) -> None:
    dense = float_linear()
    layer = quantized(bits, dense)
    assert not layer.weight.dtype.is_floating_point  # packed uint8 (4-bit) / int8 (8-bit)
    W = dense_weight(layer)
    assert W.shape == (OUT, IN) and W.dtype == torch.float32
    # within half a quantisation step: NF4's widest code gap, -1 to -0.696, is 0.304 of the block absmax
    # (plus the double-quantised absmax's own error); int8's step is 1/127 of the row absmax
    step = (0.16 * dense.weight.abs().max()) if bits == "4bit" else dense.weight.abs().amax(1, keepdim=True) / 127
    assert ((W - dense.weight).abs() <= step).all()
    x = torch.randn(5, IN)
    if bits == "4bit":  # Linear4bit on the CPU dequantises and multiplies in float32: the same W exactly
        torch.testing.assert_close(layer(x), x @ W.T + layer.bias, atol=1e-5, rtol=1e-5)
    else:  # LLM.int8 also quantises x per token: agreement within that error, and SCB has moved to .state
        layer(x)
        assert layer.weight.SCB is None and layer.state.SCB is not None
        torch.testing.assert_close(dense_weight(layer), W)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("variant", sorted(ADAPTERS))
def test_adapters_on_a_quantised_base_are_float32_and_only_they_learn(bits: str, variant: str) -> None:
    model = quantized_model(bits, variant)
    adapter = model.proj
    assert type(adapter.base).__name__ in {"Linear4bit", "Linear8bitLt"}  # found by inject and wrapped
    packed = adapter.base.weight.data.clone()
    params = adapter.adapter_parameters()
    assert {p.dtype for p in params.values()} == {torch.float32} and all(p.requires_grad for p in params.values())
    torch.manual_seed(1)
    x, target = torch.randn(16, IN), torch.randn(16, OUT)
    optimizer = torch.optim.Adam(list(params.values()), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = (model(x) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0]
    assert adapter.base.weight.grad is None and torch.equal(adapter.base.weight.data, packed)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("variant", sorted(ADAPTERS))
def test_quantised_base_under_bf16_autocast(bits: str, variant: str) -> None:
    """train.precision=bf16 (and CUDA's bf16 autocast): float32 adapters mixed with the base's output."""
    model = quantized_model(bits, variant)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(torch.randn(2, 5, IN))
    y.float().pow(2).mean().backward()
    assert torch.isfinite(y).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.proj.adapter_parameters().values())


@pytest.mark.parametrize("bits", BITS)
def test_dora_magnitude_is_the_row_norm_of_the_dequantised_weight(bits: str) -> None:
    dense = float_linear()
    model = quantized_model(bits, "dora", init="zero")
    adapter, reference = model.proj, quantized(bits, dense)
    import bitsandbytes.functional as bnb_functional

    if bits == "4bit":
        W = bnb_functional.dequantize_4bit(reference.weight.data, reference.weight.quant_state)
    else:
        W = bnb_functional.int8_vectorwise_dequant(reference.weight.data, reference.weight.SCB)
    torch.testing.assert_close(adapter.m.detach(), W.norm(dim=1))
    torch.testing.assert_close(adapter.m.detach(), dense.weight.norm(dim=1), rtol=0.05, atol=0)  # ≈ fp32 norm
    x = torch.randn(4, IN)
    with torch.no_grad():  # B = 0: the DoRA layer is its quantised base, before and after 8-bit SCB moves
        for _ in range(2):
            torch.testing.assert_close(adapter(x), reference(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_merging_a_4bit_adapter_gives_a_dense_float_layer_with_the_same_output(variant: str) -> None:
    model = quantized_model("4bit", variant)
    with torch.no_grad():
        model.proj.B.normal_(std=0.5)  # a non-trivial adapter
        x = torch.randn(6, IN)
        adapted = model(x)
        merged = model.proj.merge()
    assert type(merged) is nn.Linear and merged.weight.dtype == torch.float32
    torch.testing.assert_close(merged(x), adapted, atol=1e-4, rtol=1e-4)


def test_integer_weight_stand_in_gets_float_adapters_and_a_clear_error_for_its_math() -> None:
    """No bitsandbytes needed: a uint8-weight Linear (as a packed 4-bit layer looks to torch)."""
    layer = nn.Linear(IN, OUT)
    layer.weight = nn.Parameter(torch.zeros(OUT, IN, dtype=torch.uint8), requires_grad=False)
    adapter = LoRALinear(layer, ModuleSettings(rank=2, alpha=4.0))
    assert adapter.A.dtype == adapter.B.dtype == torch.float32 and adapter.A.requires_grad
    with pytest.raises(TunelabError, match="stores its weight as torch.uint8"):
        dense_weight(layer)
    assert not adapter_modules(nn.Sequential(layer))
