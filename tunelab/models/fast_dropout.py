"""Dropout whose masks cost a sixth of torch's on CPU, for every nn.Dropout and encoder attention.

Why: on a CPU, `torch.bernoulli_` draws one Mersenne-Twister number per element, single-threaded. In
LoRA fine-tuning of a BERT-style encoder (MiniLM, extractive QA, batch 16 x 176 tokens) the dropout
masks took about a third of the step: the attention-probability masks are (batch, heads, T, T).

How: one 64-bit draw of `random_()` holds 63 random bits; three 16-bit lanes of it are three masks.
An element is kept when its 16-bit lane r (uniform on -32768..32767) satisfies r >= -32768 + k with
k = round(p · 65536), so

    P(keep) = 1 - k / 65536,   y = x · keep / P(keep)   (inverted dropout, E[y] = x)

p is honoured to 1/65536 (0.1 -> 0.0999985). The draws come from torch's default generator, so runs
stay seeded and a resumed run (which restores that generator) replays the same masks. The boolean mask
is what backward keeps (1 byte per element).

The encoder's attention dropout lives inside `scaled_dot_product_attention`, so `use_fast_dropout`
registers an attention function that computes softmax(Q Kᵀ · scale + mask) with this dropout before
multiplying by V, for bidirectional attention in training only; every other call (evaluation, causal
decoders, no dropout) goes to the stock SDPA function unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTION_NAME = "tunelab_sdpa"
LANES = 3  # 16-bit lanes used of each 64-bit draw (the fourth has only 15 random bits)


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """A boolean keep-mask of `shape` with P(keep) ≈ 1 - p, and the exact 1 / P(keep)."""
    n = shape.numel()
    words = torch.empty((n + LANES - 1) // LANES, dtype=torch.int64, device=device).random_()
    k = round(p * 65536)
    keep = words.view(torch.int16).view(-1, 4)[:, :LANES] >= k - 32768  # compared before flattening: no copy
    return keep.view(-1)[:n].view(shape), 65536 / (65536 - k)


class MaskedScale(torch.autograd.Function):
    """y = x · keep · scale; backward dx = dy · keep · scale (keep saved as bool, not as a float mask)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x * scale, 0.0)  # half the time of x * keep * scale (no bool -> float pass)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad * ctx.scale, 0.0), None, None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    keep, scale = keep_mask(x.shape, p, x.device)
    return MaskedScale.apply(x, keep, scale)


class FastDropout(nn.Dropout):
    """nn.Dropout with the cheap mask above (same p, same train/eval switch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
              **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: (B, H, T, D) in, (B, T, H, D) out.

    Bidirectional attention with dropout in training: softmax(Q Kᵀ · scaling + mask) -> fast dropout ->
    · V, the eager formula. A boolean mask means True = attend (transformers' SDPA mask); a float mask
    is added. Everything else is the stock SDPA function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = (dropout == 0.0 or not module.training or getattr(module, "is_causal", False)
             or key.shape[1] != query.shape[1] or any(kwargs.get(k) is not None for k in ("position_bias", "softcap")))
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query * scale, key.transpose(-1, -2))  # scaled on (T, D), not on (T, T)
    if attention_mask is not None:  # in place: the matmul's backward needs its inputs, not its output
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores.add_(attention_mask)
    probs = fast_dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, attention)
    AttentionMaskInterface.register(ATTENTION_NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every active nn.Dropout for FastDropout and route SDPA attention through `attention`;
    returns how many dropout modules were swapped (0: the model has no dropout, nothing changed)."""
    swapped = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout and child.p > 0:
                setattr(parent, name, FastDropout(child.p, child.inplace).train(child.training))
                swapped += 1
    config = getattr(model, "config", None)
    if swapped and getattr(config, "_attn_implementation", None) == "sdpa":
        register_attention()
        for sub in model.modules():  # every sub-config (encoder/decoder parts) names its implementation
            sub_config = getattr(sub, "config", None)
            if getattr(sub_config, "_attn_implementation", None) == "sdpa":
                sub_config._attn_implementation = ATTENTION_NAME
    return swapped
