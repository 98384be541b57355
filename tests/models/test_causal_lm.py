import pytest
import torch

from tests.tasks.tiny_chat import save_chat_model
from tunelab.config import ModelConfig
from tunelab.errors import TunelabError
from tunelab.models.causal_lm import load_causal_lm, quantization_config
from tunelab.train.lm_loss import mean_nll
from tunelab.train.packing import collate_padded


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal; the GPU path needs bitsandbytes")
@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantize_without_gpu_is_a_one_line_error(bits):
    with pytest.raises(TunelabError, match=f"model.quantize={bits} needs a CUDA GPU"):
        quantization_config(bits)


def test_gradient_checkpointing_gives_the_same_loss_and_grads(tmp_path):
    import numpy as np

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
