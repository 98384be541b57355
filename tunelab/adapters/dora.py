"""DoRA: LoRA whose merged weight is split into a trainable per-row magnitude and a direction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.adapters.lowrank import LowRankLinear, ModuleSettings, add_up, dense_weight


class DoRALinear(LowRankLinear):
    """y = m ⊙ (W + s·B A) x / ‖W + s·B A‖_row + b,   s = alpha / r

    Shapes: x (..., in), W (out, in), A (r, in), B (out, r), m (out,), ‖·‖_row (out,) = L2 norm of each
    output row, so the bracket is a unit-norm direction per output feature and m its length.
    Init: A kaiming-uniform, B as `init` (zero by default), m = ‖W + s·B A‖_row, so step 0 equals LoRA
    (and, with B = 0, the base layer).
    As PEFT `use_dora=True` (and the paper's section 4.3) the norm is detached: backward treats it as a
    constant. Zero rows of W would give 0/0 = NaN in PEFT; here the norm is clamped at `norm_eps`.
    Speed: one base matmul. With g = m / ‖·‖ (out,), y = g ⊙ (W x + s·B A x) + b, because g is per output
    feature it commutes with the matmul; the norm itself costs one (out, in) addmm per forward, no grad.
    Dropout exactly as PEFT: while training with p > 0 the adapter sees dropout(x) and the base sees x,
    y = W x + b + (g - 1) ⊙ W dropout(x) + g ⊙ s·B A dropout(x), which needs a second base matmul (as
    PEFT's does); in eval or with p = 0 the one-matmul form above is exact.
    Quantised base (QLoRA): ‖·‖_row is taken of the dequantised W (`dense_weight`), and W x of the
    base's own 4/8-bit forward (`base_matmul`), so no dense W outlives the norm computation.
    Mergeable: W' = g[:, None] ⊙ (W + s·B A).
    Source: Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation" (arXiv:2402.09353);
    PEFT `tuners/lora/dora.py` (DoraLinearLayer) for the detach and dropout handling.
    """

    variant = "dora"

    def __init__(self, base: nn.Linear, settings: ModuleSettings) -> None:
        super().__init__(base, settings)
        self.m = nn.Parameter(self.weight_norm(clamp=False))  # (out,)

    @classmethod
    def extra_param_count(cls, in_features: int, out_features: int, settings: ModuleSettings) -> int:
        return out_features

    def weight_norm(self, clamp: bool = True) -> torch.Tensor:
        """‖W + s·B A‖ per output row, (out,), outside autograd (the detach PEFT and the paper use)."""
        with torch.no_grad():
            W = dense_weight(self.base).to(self.A.dtype)  # (out, in), dequantised for a 4/8-bit base
            merged = torch.addmm(W, self.B, self.A, alpha=self.scaling)  # (out, in)
            norm = torch.linalg.vector_norm(merged, dim=1)
        return norm.clamp_min(self.settings.norm_eps) if clamp else norm

    def adapted(self, x: torch.Tensor) -> torch.Tensor:
        g = self.m / self.weight_norm()  # (out,)
        gB = self.B * g[:, None]  # (out, r): g ⊙ (B h) = (g ⊙ B) h, folded in rank space
        b = self.base.bias
        if self.training and not isinstance(self.dropout, nn.Identity):
            x_d = self.dropout(x)
            return add_up(self.base(x) + (g - 1) * self.base_matmul(x_d), F.linear(x_d, self.A) * self.scaling, gB)
        Wx = self.base_matmul(x)  # (..., out), the only full-size matmul
        return add_up(Wx * g if b is None else torch.addcmul(b, Wx, g), self.down(x), gB)

    def merge(self) -> nn.Linear:
        with torch.no_grad():
            g = self.m / self.weight_norm()
            return self.merged_linear(g[:, None] * (dense_weight(self.base).to(self.A.dtype) + self.delta_weight()))
