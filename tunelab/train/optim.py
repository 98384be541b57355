"""AdamW (or SGD with momentum, or Muon + AdamW) with per-group weight decay and the learning-rate
schedules recipes name, optionally with lookahead weight averaging.

Groups: biases/norms and magnitude vectors get no decay; adapter scales get the small decay seed
000 used (1e-4) so they neither collapse nor explode; the task head may have its own lr.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tunelab.config import TrainConfig
from tunelab.models.heads import is_head_parameter

NO_DECAY_LEAVES = ("bias", "m", "m_in", "m_out", "magnitude")
NORM_MARKERS = ("LayerNorm", "layer_norm", "norm")


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if "scale" in leaf:
            key, decay = "scales", cfg.scale_weight_decay
        elif param.ndim < 2 or leaf in NO_DECAY_LEAVES or any(marker in name for marker in NORM_MARKERS):
            key, decay = "no_decay", 0.0
        else:
            key, decay = "decay", cfg.weight_decay
        lr = cfg.head_lr if (cfg.head_lr and is_head_parameter(name)) else cfg.lr
        group = groups.setdefault(f"{key}/{lr}", {"params": [], "weight_decay": decay, "lr": lr, "name": key})
        group["params"].append(param)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: TrainConfig, total_steps: int | None = None) -> torch.optim.Optimizer:
    """`total_steps`: the run's optimizer steps, which the lookahead schedule needs (None: no lookahead)."""
    groups = param_groups(model, cfg)
    if not groups:
        from tunelab.errors import TunelabError

        raise TunelabError("nothing to train: no parameter has requires_grad (check adapter.targets)")
    if cfg.optimizer == "muon":
        return MuonAdamW(model, groups, cfg)
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, foreach=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=1e-8, foreach=True)
    if cfg.lookahead_every and total_steps:
        add_lookahead(optimizer, total_steps, cfg.lookahead_every, cfg.lookahead_decay)
    return optimizer


def add_lookahead(optimizer: torch.optim.Optimizer, total_steps: int, every: int, decay: float) -> None:
    """Lookahead weight averaging, as airbench94 trains CIFAR-10: after every `every`-th optimizer step t,

        slow <- slow + (1 - beta_t) (fast - slow),   beta_t = decay * (t / T)^3,   fast <- slow,

    so early training is barely averaged and the end the most; after the last step T the weights are the
    slow ones. The slow weights start as the weights at the first update (airbench's start at the initial
    weights, which beta ~ (every / T)^3 ~ 0 weighs not at all). They live in the optimizer state and the
    step count in the parameter groups, so checkpoints hold both and a resumed run averages the same.
    Parameters only: BatchNorm running statistics keep following the trained weights."""
    for group in optimizer.param_groups:
        group.setdefault("lookahead_step", 0)
    params = [p for group in optimizer.param_groups for p in group["params"]]

    @torch.no_grad()
    def after_step(opt: torch.optim.Optimizer, args, kwargs) -> None:
        step = opt.param_groups[0]["lookahead_step"] + 1
        for group in opt.param_groups:
            group["lookahead_step"] = step
        if step % every and step != total_steps:
            return
        beta = decay * min(1.0, step / total_steps) ** 3
        for param in params:
            state = opt.state[param]
            if "lookahead_slow" not in state:
                state["lookahead_slow"] = param.detach().clone()
            elif step % every == 0:
                state["lookahead_slow"].lerp_(param.detach(), 1.0 - beta)
            param.copy_(state["lookahead_slow"])

    optimizer.register_step_post_hook(after_step)


def muon_matrices(model: nn.Module) -> set[int]:
    """Ids of the hidden 2-D weight matrices Muon is meant for: every trainable matrix except
    embeddings (a lookup table, here also the tied output projection), which stay with AdamW."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return {id(p) for p in model.parameters() if p.requires_grad and p.ndim == 2 and id(p) not in embeddings}


class MuonAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on the hidden matrices (momentum, then the update orthogonalised by a Newton-Schulz
    iteration, UΣVᵀ -> UVᵀ, at train.muon_lr), torch.optim.AdamW on everything else (embeddings, norms,
    biases at train.lr), stepped together. `param_groups` are the two inner optimizers' own group dicts,
    so the lr schedule scales both, and the state dict holds both states (checkpoints resume it)."""

    def __init__(self, model: nn.Module, groups: list[dict], cfg: TrainConfig):
        matrices = muon_matrices(model)
        muon_params = [p for g in groups for p in g["params"] if id(p) in matrices]
        adam_groups = [{**g, "params": [p for p in g["params"] if id(p) not in matrices]} for g in groups]
        adam_groups = [g for g in adam_groups if g["params"]]
        self.muon = torch.optim.Muon([{"params": muon_params, "name": "muon"}], lr=cfg.muon_lr,
                                     weight_decay=cfg.weight_decay, momentum=0.95, nesterov=True)
        self.adamw = torch.optim.AdamW(adam_groups, lr=cfg.lr, betas=cfg.betas, eps=1e-8, foreach=True)
        super().__init__(self.inner_groups(), {})

    def inner_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    @torch.no_grad()
    def step(self, closure=None):
        self.muon.step()
        self.adamw.step()

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self.inner_groups()  # loading replaces the inner group dicts


def lr_multiplier(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Factor applied to each group's base lr at optimizer step `step` (0-based)."""
    warmup = int(cfg.warmup_ratio * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if cfg.schedule == "constant":
        return 1.0
    floor = cfg.min_lr_ratio  # decaying schedules end at floor·lr (nanoGPT's min_lr = lr/10)
    if cfg.schedule == "linear":
        return floor + (1.0 - floor) * max(0.0, 1.0 - progress)
    if cfg.schedule == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    # "step": seed 000's 1e-3 -> 3e-4 -> 1e-4, expressed as lrs reached at fractions of training
    factor = 1.0
    for milestone, lr in zip(cfg.step_milestones, cfg.step_lrs, strict=False):
        if step / max(1, total_steps) >= milestone:
            factor = lr / cfg.lr
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, cfg: TrainConfig):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, total_steps, cfg))
