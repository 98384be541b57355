from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tasks.tiny_chat import save_chat_model
from tunelab.adapters.inject import adapter_modules, inject_adapters
from tunelab.adapters.spec import AdapterConfig
from tunelab.config import ModelConfig
from tunelab.models.causal_lm import load_causal_lm
from tunelab.models.placement import is_device_mapped
from tunelab.train.lm_loss import mean_nll
from tunelab.train.packing import collate_padded

QUANTIZED_LAYER = {"4bit": "Linear4bit", "8bit": "Linear8bitLt"}


def toy_batch() -> dict[str, torch.Tensor]:
    ids = [np.arange(5, 25) % 30 + 5, np.arange(7, 20)]
    return collate_padded(np.array([0, 1]), ids, [np.append(x[1:], -100) for x in ids], pad_id=0)


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantised_load_wraps_every_projection_and_keeps_the_rest_float32(tmp_path, one_thread, bits):
    folder = save_chat_model(tmp_path / "m")
    model = load_causal_lm(folder, ModelConfig(name=str(folder), quantize=bits))
    maps = Path("/proc/self/maps")
    if maps.exists():  # the fp32 checkpoint file is not kept mapped (and resident) next to the packed weights
        assert str(folder) not in maps.read_text()
    assert is_device_mapped(model) and not is_device_mapped(load_causal_lm(folder, ModelConfig(name=str(folder))))
    names = inject_adapters(model, AdapterConfig(variant="dora", targets=["proj"]))
    assert len(names) == 2 * 7  # q, k, v, o, gate, up, down in both layers: bitsandbytes layers are nn.Linear
    assert {type(mod.base).__name__ for mod in adapter_modules(model).values()} == {QUANTIZED_LAYER[bits]}
    floats = {p.dtype for name, p in model.named_parameters() if ".base.weight" not in name}
    assert floats == {torch.float32}  # embeddings, norms, head and every adapter parameter


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_qlora_trains_only_the_adapters_with_a_falling_loss(tmp_path, one_thread, bits, variant):
    torch.manual_seed(0)
    folder = save_chat_model(tmp_path / "m")
    model = load_causal_lm(folder, ModelConfig(name=str(folder), quantize=bits), gradient_checkpointing=True)
    inject_adapters(model, AdapterConfig(variant=variant, rank=4, targets=["proj"]))
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.rsplit(".", 1)[-1] in {"A", "B", "m"} for name in trainable)
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=1e-2)
    batch, losses = toy_batch(), []
    model.train()
    for _ in range(8):
        loss = mean_nll(model, batch, chunk=8)
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable.values())
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.6 * losses[0]
    assert all(p.grad is None for name, p in model.named_parameters() if name in frozen)
    assert all(torch.equal(p, frozen[name]) for name, p in model.named_parameters() if name in frozen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_4bit_on_cuda_computes_in_bf16_and_trains(tmp_path):
    folder = save_chat_model(tmp_path / "m")
    model = load_causal_lm(folder, ModelConfig(name=str(folder), quantize="4bit"))
    inject_adapters(model, AdapterConfig(variant="dora", rank=4, targets=["proj"]))
    layer = next(iter(adapter_modules(model).values()))
    assert layer.A.is_cuda and layer.A.dtype == torch.float32 and layer.base.compute_dtype == torch.bfloat16
    batch = {k: v.cuda() for k, v in toy_batch().items()}
    loss = mean_nll(model.train(), batch, chunk=8)
    loss.backward()
    assert torch.isfinite(loss) and layer.B.grad is not None


def test_gradient_checkpointing_gives_the_same_loss_and_grads(tmp_path):
    folder = save_chat_model(tmp_path / "m")
    plain = load_causal_lm(folder, ModelConfig(name=str(folder)))
    checkpointed = load_causal_lm(folder, ModelConfig(name=str(folder)), gradient_checkpointing=True)
    assert checkpointed.is_gradient_checkpointing and not plain.config.use_cache
    ids = [np.arange(5, 15), np.arange(7, 12)]
    batch = collate_padded(np.array([0, 1]), ids, [np.append(x[1:], -100) for x in ids], pad_id=0)
    losses = []
    for model in (plain, checkpointed):
        model.train()
        loss = mean_nll(model, batch, chunk=4)
        loss.backward()
        losses.append((float(loss), model.model.layers[0].mlp.up_proj.weight.grad.clone()))
    assert losses[0][0] == pytest.approx(losses[1][0], abs=1e-6)
    torch.testing.assert_close(losses[0][1], losses[1][1])
