"""What every adapter variant shares: the frozen base linear, the low-rank pair (A, B) and the scales.

A variant subclasses `LowRankLinear`, adds its own parameters in `__init__`, writes `adapted` (its
forward; `LowRankLinear.forward` dispatches to it unless the adapter is switched off, see switch.py),
and (if the math allows) `merge`. Parameter names follow the math: `A` (r, in), `B` (out, r), `m`, `scale`.

Quantised bases (bitsandbytes Linear4bit / Linear8bitLt, QLoRA) store W as packed uint8 / int8: the
adapter's own parameters are then float32 (`adapter_dtype`), every piece of math that reads W goes
through `dense_weight` (the dequantised (out, in) matrix), and W x itself always comes from the base
module's own forward, which dequantises block by block and saves only the packed weight for backward.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
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


QUANTIZED_PARAMS = ("Params4bit", "Int8Params")  # bitsandbytes parameter classes (matched by name: no import)


def is_quantized(base: nn.Linear) -> bool:
    """True for a bitsandbytes 4/8-bit layer, whose weight holds packed integers rather than W."""
    return type(base.weight).__name__ in QUANTIZED_PARAMS


def adapter_dtype(base: nn.Linear) -> torch.dtype:
    """The dtype of A, B, m, scale: the base weight's (fp32, bf16, ...) when it is a float, float32 next to
    a quantised base (a uint8 / int8 weight dtype cannot hold gradients; float32 master weights as QLoRA)."""
    return base.weight.dtype if base.weight.dtype.is_floating_point else torch.float32


def dense_weight(base: nn.Linear) -> torch.Tensor:
    """W (out, in) as a float matrix, for the math that reads the weight itself (DoRA's row norm, merge).

    A plain layer returns its weight (no copy). 4-bit: W = dequantize_4bit(packed, quant_state) (NF4/FP4
    code book × per-block absmax, itself dequantised under double quantisation). 8-bit (LLM.int8): W =
    int8 · SCB / 127 with SCB the per-row absmax, kept on the weight until the first forward and on
    `base.state` afterwards. The result is a fresh tensor each call (nothing dense is kept around).
    """
    weight = base.weight
    kind = type(weight).__name__
    if kind == "Params4bit":
        import bitsandbytes.functional as bnb_functional

        return bnb_functional.dequantize_4bit(weight.data, weight.quant_state)
    if kind == "Int8Params":
        import bitsandbytes.functional as bnb_functional

        scb = weight.SCB if weight.SCB is not None else base.state.SCB
        return bnb_functional.int8_vectorwise_dequant(weight.data, scb)
    if not weight.dtype.is_floating_point:
        raise TunelabError(f"{type(base).__name__} stores its weight as {weight.dtype}: tunelab can dequantise "
                           "bitsandbytes 4-bit and 8-bit layers only")
    return weight


class LowRankLinear(nn.Module, ABC):
    """Base of every variant: y = W x + b + (variant-specific use of) s · B A dropout(x), s = alpha / r.

    The wrapped `base` keeps its parameters (frozen by `inject_adapters`); `weight`/`bias` are forwarded
    so model code that peeks at `module.weight.dtype` keeps working after injection. `enabled = False`
    (set by `switch.disabled`) makes the layer exactly its base, y = W x + b.
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
        self.enabled = True  # plain attribute, not state: switching adapters off is not saved
        self.dropout: nn.Module = nn.Dropout(settings.dropout) if settings.dropout > 0 else nn.Identity()
        like = {"device": base.weight.device, "dtype": adapter_dtype(base)}
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The variant's `adapted(x)`, or exactly `base(x)` while switched off (the one place that checks)."""
        return self.adapted(x) if self.enabled else self.base(x)

    @abstractmethod
    def adapted(self, x: torch.Tensor) -> torch.Tensor:
        """The variant's forward with the adapter on."""

    def base_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """W x without the bias, (..., out). A quantised base runs its own forward (it dequantises per
        block and keeps only the packed weight for backward) and the bias is taken back out; a dense
        F.linear(x, dense_weight) there would keep a full float W alive per layer until backward."""
        if not is_quantized(self.base):
            return F.linear(x, self.base.weight)
        y = self.base(x)
        return y if self.base.bias is None else y - self.base.bias

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
        """A plain nn.Linear with `weight` and the base bias: what `merge` hands back. It takes the dtype
        of `weight`, i.e. of the dequantised W for a quantised base (merging does not re-quantise)."""
        base = self.base
        merged = nn.Linear(self.in_features, self.out_features, bias=base.bias is not None,
                           device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            merged.weight.copy_(weight)
            if base.bias is not None:
                merged.bias.copy_(base.bias)
        merged.requires_grad_(base.weight.requires_grad)
        return merged

    def extra_repr(self) -> str:
        return f"variant={self.variant}, r={self.r}, scaling={self.scaling:g}"


def add_up(acc: torch.Tensor, h: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """acc + h Bᵀ. In float32 one addmm (the GEMM accumulates into acc, saving a separate (tokens, out)
    add pass: 12% of a MiniLM LoRA step on CPU); in bf16/fp16 (autocast) a plain add, because the CPU's
    low-precision addmm with an accumulator was 22% slower than matmul + add on the same step."""
    if acc.dtype != torch.float32 or torch.is_autocast_enabled(acc.device.type):
        return acc + F.linear(h, B)
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
    """m ~ N(0, 1/r) (variance 1/r, as seed 000 initialises its magnitude vectors), on `like`'s device and
    in its dtype (pass the adapter's A, never a possibly quantised base weight)."""
    m = torch.empty(features, device=like.device, dtype=like.dtype)
    nn.init.normal_(m, std=1.0 / math.sqrt(r))
    return nn.Parameter(m)
