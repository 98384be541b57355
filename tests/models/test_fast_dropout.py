"""The cheap CPU dropout: the keep rate and the 1/(1-p) scale are right, masks are seeded and independent
across elements, backward uses the forward's mask, and in a BERT encoder it changes nothing in eval mode
while the attention path equals the eager formula with the same mask."""

import torch
from torch import nn
from transformers import BertConfig, BertForQuestionAnswering

from tunelab.models.fast_dropout import (
    ATTENTION_NAME,
    FastDropout,
    attention,
    fast_dropout,
    keep_mask,
    use_fast_dropout,
)


def test_keep_rate_and_scale_make_an_unbiased_dropout():
    torch.manual_seed(0)
    x = torch.ones(1_000_003)  # not a multiple of the 3 lanes per draw
    y = fast_dropout(x, 0.1)
    kept = (y != 0).double().mean().item()
    assert abs(kept - 0.9) < 0.002  # binomial sd at n = 1e6 is 0.0003
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 65536 / (65536 - 6554)))
    assert abs(y.double().mean().item() - 1.0) < 0.003  # E[y] = x


def test_neighbouring_elements_are_independent():
    """Three masks come from one 64-bit draw: adjacent elements (same draw or the next) must not correlate."""
    torch.manual_seed(1)
    keep, _ = keep_mask(torch.Size([600_000]), 0.5, torch.device("cpu"))
    k = keep.double()
    for lag in (1, 2, 3, 4):
        corr = torch.corrcoef(torch.stack([k[:-lag], k[lag:]]))[0, 1].item()
        assert abs(corr) < 0.01, (lag, corr)
    for lane in range(3):  # each lane of the draws keeps at the asked rate
        assert abs(k[lane::3].mean().item() - 0.5) < 0.005


def test_masks_follow_the_seed_and_backward_uses_the_same_mask():
    x = torch.randn(64, 50, requires_grad=True)
    torch.manual_seed(7)
    y1 = fast_dropout(x, 0.3)
    torch.manual_seed(7)
    y2 = fast_dropout(x, 0.3)
    torch.manual_seed(8)
    y3 = fast_dropout(x, 0.3)
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    (y1 * torch.arange(50.0)).sum().backward()
    keep = y1.detach() != 0
    assert torch.allclose(x.grad, torch.where(keep, torch.arange(50.0).expand(64, 50) / (1 - 19661 / 65536), 0.0))


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(10, 10)
    layer = FastDropout(0.5).eval()
    assert torch.equal(layer(x), x) and torch.equal(fast_dropout(x, 0.0), x)
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))


def tiny_bert(dropout: float) -> BertForQuestionAnswering:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        attn_implementation="sdpa")
    return BertForQuestionAnswering(config)


def test_a_bert_encoder_is_swapped_and_unchanged_in_eval_mode():
    ids = torch.randint(0, 50, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 8:] = 0
    plain, fast = tiny_bert(0.1).eval(), tiny_bert(0.1).eval()
    assert use_fast_dropout(fast) == 7  # embeddings + 3 per layer (attention probs, attention out, ffn out)
    assert fast.config._attn_implementation == ATTENTION_NAME
    assert not any(type(m) is nn.Dropout for m in fast.modules())
    with torch.no_grad():
        a, b = plain(input_ids=ids, attention_mask=mask), fast(input_ids=ids, attention_mask=mask)
    assert torch.allclose(a.start_logits, b.start_logits, atol=1e-5)
    fast.train()
    torch.manual_seed(3)
    first = fast(input_ids=ids, attention_mask=mask).start_logits
    torch.manual_seed(4)
    assert not torch.allclose(first, fast(input_ids=ids, attention_mask=mask).start_logits)  # dropout is on
    assert use_fast_dropout(tiny_bert(0.0)) == 0  # nothing to swap: the model is left as it was


def test_training_attention_equals_the_eager_formula_with_the_same_mask():
    module = nn.Module().train()
    q, k, v = (torch.randn(2, 4, 9, 8) for _ in range(3))
    keep_keys = torch.ones(2, 1, 9, 9, dtype=torch.bool)
    keep_keys[1, :, :, 6:] = False  # padding keys of the second row
    torch.manual_seed(5)
    out, _ = attention(module, q, k, v, keep_keys, dropout=0.2, scaling=0.3)
    torch.manual_seed(5)
    probs = torch.softmax((q @ k.transpose(-1, -2) * 0.3).masked_fill(~keep_keys, float("-inf")), dim=-1)
    keep, scale = keep_mask(probs.shape, 0.2, probs.device)
    expected = ((probs * keep * scale) @ v).transpose(1, 2)
    assert out.shape == (2, 9, 4, 8) and torch.allclose(out, expected, atol=1e-6)
    module.eval()  # evaluation goes to the stock SDPA function: no dropout
    out_eval, _ = attention(module, q, k, v, keep_keys, dropout=0.0, scaling=0.3)
    expected_eval = (probs @ v).transpose(1, 2)
    assert torch.allclose(out_eval, expected_eval, atol=1e-5)


def test_runs_and_plans_place_the_model_with_the_cheap_dropout_only_when_asked():
    from tunelab.runner import place_model

    cpu = torch.device("cpu")
    fast, plain = place_model(tiny_bert(0.1), cpu, True), place_model(tiny_bert(0.1), cpu, False)
    assert sum(type(m) is FastDropout for m in fast.modules()) == 7
    assert not any(type(m) is FastDropout for m in plain.modules()) and plain.config._attn_implementation == "sdpa"
