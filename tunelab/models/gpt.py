"""A small decoder-only transformer (GPT) trained from scratch, in the shape of nanoGPT's model.py.

`GPTSettings` is the recipe's `model.arch` section (`type: gpt`); `GPT.forward(idx, targets)` returns
(logits, mean cross-entropy or None). Every block is pre-norm,

    x = x + Attention(Norm(x))        causal self-attention via torch's scaled_dot_product_attention
    x = x + MLP(Norm(x))

and the output projection shares its matrix with the token embedding (weight tying). The options a modern
small-model trainer would consider are settings, so recipes (and the A/B runs in docs/lm.md) can choose:
- `norm`: LayerNorm (no bias) or RMSNorm, x / sqrt(mean(x²) + ε) · g;
- `mlp`: GELU (4·d hidden) or SwiGLU, W₂(SiLU(W₁x) ⊙ W₃x) with 8/3·d hidden (same parameter count);
- `position`: learned absolute embeddings or RoPE, which rotates each (q, k) pair of channels by an
  angle t·θ_i, θ_i = base^(−2i/d_head), so attention scores depend on the offset between positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.errors import TunelabError
from tunelab.models.scratch import register_architecture


@dataclass(frozen=True)
class GPTSettings:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64  # the longest context the model sees
    dropout: float = 0.0
    bias: bool = False
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    mlp: Literal["gelu", "swiglu"] = "gelu"
    position: Literal["learned", "rope"] = "learned"
    rope_base: float = 10000.0
    vocab_size: int | None = None  # taken from the tokenizer when the task builds the model

    def __post_init__(self) -> None:
        for key in ("n_layer", "n_head", "n_embd", "block_size"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"model.arch.{key} must be a positive integer")
        if self.n_embd % self.n_head:
            raise ValueError(f"model.arch.n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.position == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError("model.arch.position: rope needs an even head size (n_embd / n_head)")
        choices = {"norm": ("layernorm", "rmsnorm"), "mlp": ("gelu", "swiglu"), "position": ("learned", "rope")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"model.arch.{key}: {getattr(self, key)!r}; choose one of {', '.join(allowed)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("model.arch.dropout must be in [0, 1)")


def make_norm(settings: GPTSettings) -> nn.Module:
    if settings.norm == "rmsnorm":
        return nn.RMSNorm(settings.n_embd, eps=1e-6)
    return nn.LayerNorm(settings.n_embd, bias=settings.bias)


def rope_tables(settings: GPTSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of t·θ_i for positions t < block_size and channel pairs i, shaped (T, head_size/2)."""
    head = settings.n_embd // settings.n_head
    theta = settings.rope_base ** (-torch.arange(0, head, 2, dtype=torch.float32) / head)
    angles = torch.outer(torch.arange(settings.block_size, dtype=torch.float32), theta)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (x₁, x₂) of x (B, H, T, D) by the angle of each position."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.flatten(-2)


class CausalSelfAttention(nn.Module):
    def __init__(self, settings: GPTSettings):
        super().__init__()
        self.n_head = settings.n_head
        self.c_attn = nn.Linear(settings.n_embd, 3 * settings.n_embd, bias=settings.bias)
        self.c_proj = nn.Linear(settings.n_embd, settings.n_embd, bias=settings.bias)
        self.dropout = settings.dropout
        self.resid_dropout = nn.Dropout(settings.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if rope is not None:
            cos, sin = rope[0][:T], rope[1][:T]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class MLP(nn.Module):
    """GELU: W₂ GELU(W₁x), hidden 4d. SwiGLU: W₂(SiLU(W₁x) ⊙ W₃x), hidden ⌈8d/3⌉ rounded to 8."""

    def __init__(self, settings: GPTSettings):
        super().__init__()
        d = settings.n_embd
        self.gated = settings.mlp == "swiglu"
        hidden = 8 * math.ceil(8 * d / 3 / 8) if self.gated else 4 * d
        self.c_fc = nn.Linear(d, 2 * hidden if self.gated else hidden, bias=settings.bias)
        self.c_proj = nn.Linear(hidden, d, bias=settings.bias)
        self.dropout = nn.Dropout(settings.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, settings: GPTSettings):
        super().__init__()
        self.ln_1 = make_norm(settings)
        self.attn = CausalSelfAttention(settings)
        self.ln_2 = make_norm(settings)
        self.mlp = MLP(settings)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, settings: GPTSettings):
        super().__init__()
        if not settings.vocab_size:
            raise TunelabError("model.arch.vocab_size: unknown (the task sets it from its tokenizer)")
        self.settings = settings
        self.wte = nn.Embedding(settings.vocab_size, settings.n_embd)
        self.wpe = nn.Embedding(settings.block_size, settings.n_embd) if settings.position == "learned" else None
        self.drop = nn.Dropout(settings.dropout)
        self.blocks = nn.ModuleList(Block(settings) for _ in range(settings.n_layer))
        self.ln_f = make_norm(settings)
        if settings.position == "rope":
            cos, sin = rope_tables(settings)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2's scaled init: each residual projection by 1/sqrt(2·n_layer), so the stream's variance
        # does not grow with depth
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * settings.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) for every position; with targets (B, T), also the mean cross-entropy
        −(1/BT) Σ log p(targets[b, t] | idx[b, ≤t])."""
        T = idx.shape[1]
        if T > self.settings.block_size:
            raise TunelabError(f"sequence of {T} tokens is longer than model.arch.block_size "
                               f"({self.settings.block_size})")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        x = self.drop(x)
        rope = (self.rope_cos, self.rope_sin) if self.settings.position == "rope" else None
        for block in self.blocks:
            x = block(x, rope)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # weight tying: wte embeds and un-embeds tokens
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample max_new_tokens continuations of idx (B, T), each from softmax(logits / temperature)
        restricted to the top_k most likely tokens, feeding back the last block_size tokens.
        temperature 0 is greedy decoding. The draws come from `generator`, so a seed fixes the text."""
        for _ in range(max_new_tokens):
            context = idx[:, -self.settings.block_size:]
            logits = self(context)[0][:, -1, :]
            if temperature <= 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.size(-1):
                    kth = torch.topk(logits, top_k).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat((idx, nxt), dim=1)
        return idx


def build_gpt(settings: GPTSettings, vocab_size: int | None) -> GPT:
    if vocab_size is not None:
        settings = GPTSettings(**{**settings.__dict__, "vocab_size": vocab_size})
    return GPT(settings)


register_architecture("gpt", GPTSettings, build_gpt)
