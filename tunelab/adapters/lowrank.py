"""What every adapter variant shares: the frozen base linear, the low-rank pair (A, B) and the scales.

A variant subclasses `LowRankLinear`, adds its own parameters in `__init__`, writes `forward`, and
(if the math allows) `merge`. Parameter names follow the math: `A` (r, in), `B` (out, r), `m`, `scale`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.errors import TunelabError


@dataclass(frozen=True)
class ModuleSettings:
    """The resolved settings of one adapted module (global config plus the first matching LayerRule)."""

    rank: int
    alpha: float
    dropout: float = 0.0
    init: str = "zero"
    scale_granularity: str = "head"
    scale_init: float = 2.0
    norm_eps: float = 1e-6
    head_dim: int | None = None  # features per attention head (hidden_size // num_attention_heads)
    num_heads: int | None = None  # used only when head_dim is unknown


def scale_groups(features: int, settings: ModuleSettings) -> int:
    """How many trainable scalars a scale over `features` has under the configured granularity.

    "head" groups contiguous blocks of head_dim features (so GQA k/v projections with out 192 and
    head_dim 64 get 3 scalars). A size that does not split into whole heads is an error rather than a
    silent fallback: the user asked for per-head scales, and feature/scalar are one key away.
    """
    if settings.scale_granularity == "scalar":
        return 1
    if settings.scale_granularity == "feature":
        return features
    if settings.head_dim is not None:
        groups, rest = divmod(features, settings.head_dim)
        unit = f"head_dim {settings.head_dim}"
    elif settings.num_heads is not None:
        groups, rest = settings.num_heads, features % settings.num_heads
        unit = f"{settings.num_heads} heads"
    else:
        raise TunelabError("adapter.scale_granularity=head needs the model's num_attention_heads; "
                           "set scale_granularity: feature or scalar")
    if rest or groups == 0:
        raise TunelabError(f"{features} features do not split into whole heads ({unit}); "
                           "use adapter.scale_granularity: feature or scalar, or exclude this module")
    return groups


def expand_scale(scale: torch.Tensor, features: int) -> torch.Tensor:
    """(groups,) -> (features,): each group's scalar repeated over its contiguous block of features."""
    if scale.numel() == features:
        return scale
    return scale.repeat_interleave(features // scale.numel())


class LowRankLinear(nn.Module):
    """Base of every variant: y = W x + b + (variant-specific use of) s · B A dropout(x), s = alpha / r.

    The wrapped `base` keeps its parameters (frozen by `inject_adapters`); `weight`/`bias` are forwarded
    so model code that peeks at `module.weight.dtype` keeps working after injection.
    """

    variant: ClassVar[str] = ""
    mergeable: ClassVar[bool] = True
    forced_init: ClassVar[str | None] = None  # normalising variants need B != 0 at step 0

    def __init__(self, base: nn.Linear, settings: ModuleSettings) -> None:
        super().__init__()
        self.base = base
        self.settings = settings
        self.r = settings.rank
        self.scaling = settings.alpha / settings.rank
        self.dropout: nn.Module = nn.Dropout(settings.dropout) if settings.dropout > 0 else nn.Identity()
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.A = nn.Parameter(torch.empty(self.r, base.in_features, **like))  # (r, in)
        self.B = nn.Parameter(torch.empty(base.out_features, self.r, **like))  # (out, r)
        init_low_rank(self.A, self.B, self.forced_init or settings.init)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @classmethod
    def extra_param_count(cls, in_features: int, out_features: int, settings: ModuleSettings) -> int:
        """Trainable parameters beyond A and B (magnitudes, scales); independent of the rank."""
        return 0

    @classmethod
    def param_count(cls, in_features: int, out_features: int, settings: ModuleSettings) -> int:
        """Exact trainable parameter count of one module: r·(in + out) + extras. Used by the rank planner."""
        return settings.rank * (in_features + out_features) + cls.extra_param_count(
            in_features, out_features, settings)

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The adapter's own parameters (never the base's), keyed by local name."""
        return {name: p for name, p in self.named_parameters() if not name.startswith("base.")}

    def down(self, x: torch.Tensor) -> torch.Tensor:
        """h = s · A dropout(x), (..., r). s multiplies the (tokens, r) intermediate, the cheapest spot
        (r ≪ out), and every later per-feature factor is folded into B (out, r) for the same reason."""
        return F.linear(self.dropout(x), self.A) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """s · B A as an (out, in) matrix."""
        return (self.B @ self.A) * self.scaling

    def merge(self) -> nn.Linear:
        raise TunelabError(f"adapter variant '{self.variant}' cannot be merged: its normalisation depends "
                           "on the input, so no single weight matrix reproduces it")

    def merged_linear(self, weight: torch.Tensor) -> nn.Linear:
        """A plain nn.Linear with `weight` and the base bias: what `merge` hands back."""
        base = self.base
        merged = nn.Linear(self.in_features, self.out_features, bias=base.bias is not None,
                           device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            merged.weight.copy_(weight)
            if base.bias is not None:
                merged.bias.copy_(base.bias)
        merged.requires_grad_(base.weight.requires_grad)
        return merged

    def extra_repr(self) -> str:
        return f"variant={self.variant}, r={self.r}, scaling={self.scaling:g}"


def add_up(acc: torch.Tensor, h: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """acc + h Bᵀ as one addmm: the GEMM accumulates into acc, saving a separate (tokens, out) add pass."""
    out = torch.addmm(acc.reshape(-1, acc.shape[-1]), h.reshape(-1, h.shape[-1]), B.t())
    return out.view(acc.shape)


def inverse_token_norm(h: torch.Tensor, B: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / max(‖B h‖, eps) per token, (..., 1), without materialising B h.

    ‖B h‖² = hᵀ (Bᵀ B) h uses the (r, r) Gram matrix, so the per-token norm costs tokens·r² instead of
    tokens·out. Done in float32 (the vector is tiny) so eps² = 1e-12 does not underflow in half
    precision; clamping the square before rsqrt keeps the gradient finite at zero.
    """
    hf = h.float()
    squared = (F.linear(hf, B.float().t() @ B.float()) * hf).sum(-1, keepdim=True)
    return squared.clamp_min(eps * eps).rsqrt().to(h.dtype)


def init_low_rank(A: nn.Parameter, B: nn.Parameter, init: str) -> None:
    """A: kaiming-uniform with a=sqrt(5), as nn.Linear and PEFT do. B: zeros (PEFT's default, the adapter
    starts as the identity edit) or "small" = 1e-4 · N(0, 1/r) (seed 000), needed where a later
    normalisation would divide 0 by 0."""
    nn.init.kaiming_uniform_(A, a=math.sqrt(5))
    if init == "zero":
        nn.init.zeros_(B)
    else:
        nn.init.normal_(B, std=1e-4 / math.sqrt(A.shape[0]))


def random_magnitude(features: int, r: int, like: torch.Tensor) -> nn.Parameter:
    """m ~ N(0, 1/r) (variance 1/r, as seed 000 initialises its magnitude vectors)."""
    m = torch.empty(features, device=like.device, dtype=like.dtype)
    nn.init.normal_(m, std=1.0 / math.sqrt(r))
    return nn.Parameter(m)
