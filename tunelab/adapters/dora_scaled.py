"""Output-space "DoRA" with a trainable per-head scale: seed 000's fix for B staying near zero."""

from __future__ import annotations

import torch
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


class DoRAScaledLinear(LowRankLinear):
    """y = W x + b + scale ⊙ m ⊙ normalize(s·B A dropout(x)),   s = alpha / r

    Shapes: x (..., in), A (r, in), B (out, r), m (out,), scale (groups,) broadcast to (out,);
    normalize(v) = v / max(‖v‖, norm_eps) with the L2 norm taken over the out features of each token, so
    the adapter contributes a direction of length |scale ⊙ m| per token (s cancels except through eps).
    Granularity of `scale` (cfg.scale_granularity): "head" = one scalar per attention head, broadcast over
    head_dim contiguous features (groups = out // head_dim; an out size that is not a whole number of
    heads is an error naming the module, not a silent fallback); "feature" = out scalars; "scalar" = 1.
    Init: A kaiming-uniform; B = 1e-4 · N(0, 1/r) always (normalize(0) is undefined, so "zero" is
    overridden); m ~ N(0, 1/r); scale = cfg.scale_init (2.0). The base output is therefore NOT preserved
    at step 0: this is the seed's design, the random m sets the initial direction weights.
    Not mergeable: the per-token normalisation depends on the input.
    Speed: with h = s·A dropout(x) (tokens, r), ‖B h‖² = hᵀ(BᵀB)h comes from the (r, r) Gram matrix and
    f = scale ⊙ m is folded into B, so beyond LoRA's two thin matmuls nothing touches (tokens, out) except
    the one fused accumulate into W x + b: about LoRA's cost.
    Source: seed 000 ("LoRA, DoRA, and DDoRA", April 2025): per-head scaling initialised at 2.0.
    """

    variant = "dora_scaled"
    mergeable = False
    forced_init = "small"

    def __init__(self, base: nn.Linear, settings: ModuleSettings) -> None:
        super().__init__(base, settings)
        self.m = random_magnitude(self.out_features, self.r, self.A)  # (out,)
        groups = scale_groups(self.out_features, settings)
        self.scale = nn.Parameter(torch.full((groups,), settings.scale_init, device=self.A.device,
                                             dtype=self.A.dtype))  # (groups,)

    @classmethod
    def extra_param_count(cls, in_features: int, out_features: int, settings: ModuleSettings) -> int:
        return out_features + scale_groups(out_features, settings)

    def adapted(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)  # (..., r)
        f = expand_scale(self.scale, self.out_features) * self.m  # (out,)
        # f ⊙ (B h) / ‖B h‖ = (f ⊙ B)(h / ‖B h‖): norm and both factors handled in rank space
        return add_up(self.base(x), h * inverse_token_norm(h, self.B, self.settings.norm_eps), self.B * f[:, None])
