"""Double DoRA: seed 000's scaled DoRA applied at both ends, input features and output features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.adapters.lowrank import (
    LowRankLinear,
    ModuleSettings,
    add_up,
    expand_scale,
    inverse_token_norm,
    random_magnitude,
    scale_groups,
)


class DDoRALinear(LowRankLinear):
    """y = W x + b + scale_out ⊙ m_out ⊙ normalize(s·B A dropout(x')),   x' = x ⊙ scale_in ⊙ m_in

    Shapes: x (..., in), A (r, in), B (out, r), m_in (in,), scale_in (groups_in,) broadcast to (in,),
    m_out (out,), scale_out (groups_out,) broadcast to (out,). The base path sees the raw x; only the
    low-rank path sees x'. normalize is the per-token L2 over out features with eps = norm_eps.
    Granularity: as dora_scaled on both sides; "head" uses in // head_dim groups on the input side and
    out // head_dim on the output side (error if either is not a whole number of heads).
    Init: A kaiming-uniform; B = 1e-4 · N(0, 1/r) (never zero: normalize(0) is undefined);
    m_in, m_out ~ N(0, 1/r); scale_in = scale_out = cfg.scale_init (2.0). Base output not preserved at
    step 0 (seed's design). Not mergeable: the normalisation depends on the input.
    Speed: x ⊙ f_in (f_in = scale_in ⊙ m_in) is folded into A as A ⊙ f_in[None, :], an (r, in) product
    instead of a (tokens, in) one; dropout is an elementwise mask, so it commutes with the diagonal.
    The output side works in rank space as in dora_scaled (Gram-matrix norm, f_out folded into B).
    Source: seed 000 ("LoRA, DoRA, and DDoRA", April 2025), "Double DoRA".
    """

    variant = "ddora"
    mergeable = False
    forced_init = "small"

    def __init__(self, base: nn.Linear, settings: ModuleSettings) -> None:
        super().__init__(base, settings)
        like = {"device": self.A.device, "dtype": self.A.dtype}  # float even next to a 4/8-bit base
        self.m_in = random_magnitude(self.in_features, self.r, self.A)  # (in,)
        self.scale_in = nn.Parameter(torch.full((scale_groups(self.in_features, settings),),
                                                settings.scale_init, **like))
        self.m_out = random_magnitude(self.out_features, self.r, self.A)  # (out,)
        self.scale_out = nn.Parameter(torch.full((scale_groups(self.out_features, settings),),
                                                 settings.scale_init, **like))

    @classmethod
    def extra_param_count(cls, in_features: int, out_features: int, settings: ModuleSettings) -> int:
        return (in_features + scale_groups(in_features, settings)
                + out_features + scale_groups(out_features, settings))

    def adapted(self, x: torch.Tensor) -> torch.Tensor:
        f_in = expand_scale(self.scale_in, self.in_features) * self.m_in  # (in,)
        h = F.linear(self.dropout(x), self.A * f_in) * self.scaling  # (..., r) = s·A (dropout(x) ⊙ f_in)
        f_out = expand_scale(self.scale_out, self.out_features) * self.m_out  # (out,)
        inv_norm = inverse_token_norm(h, self.B, self.settings.norm_eps)  # (..., 1)
        return add_up(self.base(x), h * inv_norm, self.B * f_out[:, None])
