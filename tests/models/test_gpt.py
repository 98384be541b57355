"""The from-scratch GPT of the lm task: causal attention (a future token never changes past logits),
weight tying, seeded sampling, and one-line errors for bad model.arch settings."""

from __future__ import annotations

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.models.gpt import GPT, GPTSettings
from tunelab.models.scratch import build_scratch_model, parse_arch


def tiny(**changes) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTSettings(**{"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 24, "vocab_size": 11,
                              **changes})).eval()


@pytest.mark.parametrize("options", [{}, {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu"}])
def test_changing_a_future_token_leaves_past_logits_unchanged(options):
    model = tiny(**options)
    idx = torch.randint(0, 11, (2, 20), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 12] = (changed[:, 12] + 1) % 11
    with torch.no_grad():
        before, after = model(idx)[0], model(changed)[0]
    assert torch.allclose(before[:, :12], after[:, :12], atol=1e-6)
    assert not torch.allclose(before[:, 12:], after[:, 12:], atol=1e-4)  # the change is seen from there on


def test_rope_makes_logits_depend_on_position_without_a_position_table():
    model = tiny(position="rope")
    assert model.wpe is None
    idx = torch.tensor([[3, 4, 5, 6, 3, 4, 5, 6]])
    with torch.no_grad():
        logits = model(idx)[0]
    assert not torch.allclose(logits[0, 4:], logits[0, :4], atol=1e-5)  # same tokens, later positions


def test_output_projection_is_the_token_embedding():
    model = tiny()
    idx = torch.tensor([[1, 2, 3]])
    targets = torch.tensor([[2, 3, 4]])
    loss = model(idx, targets)[1]
    loss.backward()
    assert model.wte.weight.grad is not None
    names = [name for name, _ in model.named_parameters()]
    assert not any("lm_head" in name for name in names)
    with torch.no_grad():  # scaling the embedding scales the logits through the tied projection
        x = model.ln_f(model.blocks[1](model.blocks[0](model.wte(idx) + model.wpe(torch.arange(3)), None), None))
        assert torch.allclose(model(idx)[0], x @ model.wte.weight.T, atol=1e-5)


def test_generation_is_deterministic_for_a_seed():
    model = tiny()
    start = torch.tensor([[1, 2]])

    def draw(seed):
        return model.generate(start, 30, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))
    assert draw(7).shape == (1, 32)


def test_top_k_one_is_greedy():
    model = tiny()
    start = torch.tensor([[4]])
    sampled = model.generate(start, 10, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(sampled, model.generate(start, 10, temperature=0.0))


def test_context_longer_than_block_size_is_one_line():
    with pytest.raises(TunelabError, match="block_size"):
        tiny()(torch.zeros(1, 25, dtype=torch.long))


@pytest.mark.parametrize(("arch", "message"), [
    ({"type": "gpt", "n_layers": 2}, "model.arch.n_layers: unknown setting"),
    ({"type": "gpt", "n_embd": 30, "n_head": 4}, "multiple of n_head"),
    ({"type": "gpt", "norm": "batchnorm"}, "model.arch.norm"),
    ({"type": "gtp"}, "model.arch.type: unknown architecture 'gtp'"),
])
def test_bad_arch_settings_are_one_line_errors(arch, message):
    with pytest.raises(TunelabError, match=message) as err:
        parse_arch(arch)
    assert "\n" not in str(err.value)


def test_builder_takes_the_vocabulary_from_the_tokenizer():
    model = build_scratch_model({"type": "gpt", "n_layer": 1, "n_embd": 16, "n_head": 2}, vocab_size=7)
    assert model.wte.weight.shape == (7, 16)
