"""The GRPO objective (Shao et al. 2024, DeepSeekMath), with the Dr. GRPO and DAPO variants.

Group-relative advantages, for the G rewards r_1..r_G of one prompt:
    A_i = (r_i − mean(r)) / (std(r) + 1e-4)        (scale_rewards; Dr. GRPO drops the division)
Per completion token t, with ρ_t = exp(log πθ(o_t) − log π_old(o_t)):
    ℓ_t = −min(ρ_t·A_i, clip(ρ_t, 1−ε_low, 1+ε_high)·A_i) + β·KL_t,
    KL_t = exp(log π_ref − log πθ) − (log π_ref − log πθ) − 1       (the k3 estimator: ≥ 0, unbiased)
π_old is the policy that sampled the rollouts; with one optimisation pass per rollout set it *is* the
current policy, ρ_t = 1 and the gradient is −A_i ∇log πθ(o_t) (the clip only acts on later passes).
Aggregation: "sequence" averages each completion's tokens, then the completions (the GRPO paper);
"token" averages every token of the step, so long completions weigh in proportion to their length (DAPO).
"""

from __future__ import annotations

import torch

ADVANTAGE_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, group: int, scale: bool) -> torch.Tensor:
    """(R,) advantages of rewards laid out prompt-major, `group` completions per prompt."""
    grouped = rewards.view(-1, group)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True) + ADVANTAGE_EPS)
    return centred.reshape(-1)


def token_losses(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, eps_low: float,
                 eps_high: float, beta: float, ref_logps: torch.Tensor | None,
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ℓ_t (R, L) and, per token, whether the clip bound the ratio and the KL term (module docstring)."""
    ratio = torch.exp(logps - old_logps)
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
    a = advantages[:, None]
    loss = -torch.min(ratio * a, clipped * a)
    parts = {"clipped": ((ratio * a) > (clipped * a)).float()}
    if beta > 0 and ref_logps is not None:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        loss = loss + beta * kl
        parts["kl"] = kl
    return loss, parts


def aggregate(values: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Mean of per-token `values` (R, L) over the real tokens in `mask`: per sequence first, or per token."""
    mask = mask.to(values.dtype)
    if how == "token":
        return (values * mask).sum() / mask.sum().clamp(min=1)
    per_sequence = (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return per_sequence.mean()
