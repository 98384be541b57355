"""Preference losses on summed completion log-probs, and those log-probs computed in chunks.

Notation (one pair: prompt x, chosen y_c, rejected y_r):
    logp(y|x)  = Σ_t log π(y_t | x, y_<t)   summed over the completion tokens only
    ρ_c        = log πθ(y_c|x) − log π_ref(y_c|x),   ρ_r likewise       (implicit reward / β)
    m          = ρ_c − ρ_r

Losses (per pair; the task takes the mean over pairs):
    sigmoid  −(1−ε)·logσ(β m) − ε·logσ(−β m)    DPO (Rafailov et al. 2023, eq. 7); ε = label smoothing,
                                                the conservative DPO of Mitchell (2023)
    ipo      (m − 1/(2β))²                      IPO (Azar et al. 2023, eq. 17): regresses the margin
                                                to 1/(2β) instead of pushing it to infinity
    hinge    relu(1 − β m)                      SLiC-HF (Zhao et al. 2023) on the log-ratio margin
    simpo    −logσ(β (ā_c − ā_r) − γ)           SimPO (Meng et al. 2024, eq. 6): ā = logp(y|x) / |y|,
                                                the length-normalised log-prob; no reference model

Rewards reported: β ρ_c and β ρ_r (simpo: β ā_c and β ā_r); accuracy = mean[reward_c > reward_r].

Log-probs reuse the chunked projection of `tunelab.train.lm_loss`: the final hidden states at the N
completion positions are projected `chunk` rows at a time under activation checkpointing, so no
(B, T, V) logits tensor exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.train.lm_loss import IGNORE, final_hidden
from tunelab.train.shared_prompt import shared_prompt_logps, summed_target_logps

LOSSES = ("sigmoid", "ipo", "hinge", "simpo")


@dataclass(frozen=True)
class PairLogps:
    """Summed completion log-probs (P,) of the policy (and the reference), and completion lengths."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None


def sequence_logps(model: nn.Module, batch: dict[str, torch.Tensor], chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob of the target tokens per row (R,), target tokens per row (R,)).

    `batch["targets"]` is pre-shifted: targets[r, t] is token t+1 of row r where it is a completion
    token, else IGNORE."""
    hidden = final_hidden(model, batch)  # (R, T, H)
    keep = batch["targets"] != IGNORE  # (R, T)
    rows = keep.nonzero()[:, 0]  # (N,) row of each kept position, in the order of hidden[keep]
    sums = summed_target_logps(model, hidden[keep], batch["targets"][keep], rows, keep.shape[0], chunk)
    return sums, keep.sum(1)


def pair_logps(model: nn.Module, batch: dict[str, torch.Tensor], chunk: int) -> PairLogps:
    """Policy log-probs of a pair batch: shared-prompt layout (`tunelab.train.shared_prompt`), or 2P rows
    whose first P are [prompt, chosen] and last P [prompt, rejected]."""
    refs = batch.get("ref_chosen"), batch.get("ref_rejected")
    if "prompt_ids" in batch:
        return PairLogps(*shared_prompt_logps(model, batch, chunk), *refs)
    sums, counts = sequence_logps(model, batch, chunk)
    p = sums.shape[0] // 2
    return PairLogps(sums[:p], sums[p:], counts[:p], counts[p:], *refs)


def preference_loss(logps: PairLogps, loss: str, beta: float, label_smoothing: float = 0.0,
                    simpo_gamma: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(per-pair loss (P,), per-pair rewards and margin): the formulas of the module docstring."""
    if loss == "simpo":
        chosen = logps.chosen / logps.chosen_tokens.clamp(min=1)
        rejected = logps.rejected / logps.rejected_tokens.clamp(min=1)
        margin = chosen - rejected
        per_pair = -F.logsigmoid(beta * margin - simpo_gamma)
    else:
        if logps.ref_chosen is None or logps.ref_rejected is None:
            raise ValueError(f"loss {loss!r} needs reference log-probs")
        chosen = logps.chosen - logps.ref_chosen
        rejected = logps.rejected - logps.ref_rejected
        margin = chosen - rejected
        if loss == "sigmoid":
            per_pair = (-(1 - label_smoothing) * F.logsigmoid(beta * margin)
                        - label_smoothing * F.logsigmoid(-beta * margin))
        elif loss == "ipo":
            per_pair = (margin - 1 / (2 * beta)) ** 2
        elif loss == "hinge":
            per_pair = torch.relu(1 - beta * margin)
        else:
            raise ValueError(f"unknown preference loss {loss!r}; known: {', '.join(LOSSES)}")
    rewards = {"chosen_reward": beta * chosen, "rejected_reward": beta * rejected,
               "reward_margin": beta * margin, "reward_accuracy": (chosen > rejected).float()}
    return per_pair, {k: v.detach() for k, v in rewards.items()}
