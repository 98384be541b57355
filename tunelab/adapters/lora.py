"""LoRA: a trainable low-rank correction added to a frozen linear layer."""

from __future__ import annotations

import torch
from torch import nn

from tunelab.adapters.lowrank import LowRankLinear, add_up, dense_weight


class LoRALinear(LowRankLinear):
    """y = W x + b + (alpha / r) · B A dropout(x)

    Shapes: x (..., in), W (out, in), A (r, in), B (out, r), y (..., out).
    Init: A kaiming-uniform (a = sqrt(5)); B = 0 (init "zero", output equals the base at step 0) or
    B = 1e-4 · N(0, 1/r) (init "small", seed 000). Mergeable: W' = W + (alpha / r) · B A (W dequantised for
    a 4/8-bit base, so the merged layer is a dense float one).
    Source: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (arXiv:2106.09685);
    init and dropout placement as in PEFT `tuners/lora/layer.py`.
    """

    variant = "lora"

    def adapted(self, x: torch.Tensor) -> torch.Tensor:
        return add_up(self.base(x), self.down(x), self.B)  # W x + b + B (s·A dropout(x)), add fused

    def merge(self) -> nn.Linear:
        with torch.no_grad():
            return self.merged_linear(dense_weight(self.base).to(self.A.dtype) + self.delta_weight())
