"""Optimizer groups and schedules: which parameter gets which weight decay and lr (the task head's own lr
included), and the lr multiplier at known points of warmup, cosine and step schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tunelab.config import TrainConfig
from tunelab.errors import TunelabError
from tunelab.train.optim import build_optimizer, build_scheduler, lr_multiplier, param_groups


class Adapted(nn.Module):
    """A frozen linear with LoRA factors, a DoRA magnitude and a scaled-DoRA scale, named as the adapters name them."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4, 4), requires_grad=False)
        self.A, self.B = nn.Parameter(torch.zeros(2, 4)), nn.Parameter(torch.zeros(4, 2))
        self.m, self.scale = nn.Parameter(torch.ones(4)), nn.Parameter(torch.ones(2))


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.ModuleDict({"query": Adapted(), "dense": nn.Linear(4, 4), "LayerNorm": nn.LayerNorm(4)})
        self.classifier = nn.Linear(4, 3)
        self.score = nn.Linear(4, 3, bias=False)


def grouping(model: nn.Module, cfg: TrainConfig) -> dict[str, tuple[str, float, float]]:
    """parameter name -> (group name, weight decay, lr)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (group["name"], group["weight_decay"], group["lr"])
            for group in param_groups(model, cfg) for p in group["params"]}


def test_decay_groups_and_head_lr():
    cfg = TrainConfig(lr=1e-3, head_lr=5e-3, weight_decay=0.01, scale_weight_decay=1e-4)
    got = grouping(Toy(), cfg)
    assert got == {
        "encoder.query.A": ("decay", 0.01, 1e-3), "encoder.query.B": ("decay", 0.01, 1e-3),
        "encoder.query.m": ("no_decay", 0.0, 1e-3), "encoder.query.scale": ("scales", 1e-4, 1e-3),
        "encoder.dense.weight": ("decay", 0.01, 1e-3), "encoder.dense.bias": ("no_decay", 0.0, 1e-3),
        "encoder.LayerNorm.weight": ("no_decay", 0.0, 1e-3), "encoder.LayerNorm.bias": ("no_decay", 0.0, 1e-3),
        "classifier.weight": ("decay", 0.01, 5e-3), "classifier.bias": ("no_decay", 0.0, 5e-3),
        "score.weight": ("decay", 0.01, 5e-3),
    }  # the frozen base weight is in no group


def test_without_head_lr_the_head_trains_at_the_base_lr():
    lrs = {lr for _, _, lr in grouping(Toy(), TrainConfig(lr=2e-4)).values()}
    assert lrs == {2e-4}


def test_nothing_trainable_is_one_line():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(TunelabError, match="nothing to train"):
        build_optimizer(model, TrainConfig())


def test_cosine_schedule_at_warmup_end_midpoint_and_end():
    cfg = TrainConfig(schedule="cosine", warmup_ratio=0.2)  # 50 steps: 10 warmup, then 40 of cosine
    assert [lr_multiplier(s, 50, cfg) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])  # linear warmup
    assert lr_multiplier(10, 50, cfg) == pytest.approx(1.0)
    assert lr_multiplier(20, 50, cfg) == pytest.approx((2 + math.sqrt(2)) / 4)  # a quarter: cos(pi/4)
    assert lr_multiplier(30, 50, cfg) == pytest.approx(0.5)  # midpoint of the decay
    assert lr_multiplier(40, 50, cfg) == pytest.approx((2 - math.sqrt(2)) / 4)
    assert lr_multiplier(50, 50, cfg) == pytest.approx(0.0, abs=1e-12)


def test_linear_and_step_schedules():
    linear = TrainConfig(schedule="linear", warmup_ratio=0.0)
    assert [lr_multiplier(s, 100, linear) for s in (0, 25, 100)] == pytest.approx([1.0, 0.75, 0.0])
    step = TrainConfig(schedule="step", lr=1e-3, warmup_ratio=0.0, step_milestones=[0.5, 0.75], step_lrs=[3e-4, 1e-4])
    assert [lr_multiplier(s, 100, step) for s in (49, 50, 74, 75, 99)] == pytest.approx([1.0, 0.3, 0.3, 0.1, 0.1])


def test_scheduler_scales_every_group_from_its_own_base_lr():
    cfg = TrainConfig(lr=1e-3, head_lr=1e-2, schedule="cosine", warmup_ratio=0.0)
    model = Toy()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, 10, cfg)
    for _ in range(5):  # to the midpoint of a 10-step cosine
        optimizer.step()
        scheduler.step()
    lrs = sorted({round(group["lr"], 12) for group in optimizer.param_groups})
    assert lrs == pytest.approx([5e-4, 5e-3])


def test_sgd_with_momentum_is_chosen_by_the_recipe_and_its_first_step_is_plain_gradient_descent():
    cfg = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, torch.optim.SGD)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.ones(2, 4)).sum().backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    optimizer.step()
    for old, grad, new in zip(before, grads, model.parameters(), strict=True):
        assert torch.allclose(new.detach(), old - 0.1 * grad)


def test_adamw_betas_come_from_the_recipe():
    optimizer = build_optimizer(Toy(), TrainConfig(betas=(0.9, 0.95)))
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decay_ends_at_the_min_lr_ratio(schedule):
    cfg = TrainConfig(lr=1e-3, schedule=schedule, warmup_ratio=0.05, min_lr_ratio=0.1)
    assert lr_multiplier(99, 100, cfg) == pytest.approx(0.1, abs=0.01)  # nanoGPT's 1e-3 -> 1e-4
    assert lr_multiplier(5, 100, cfg) == pytest.approx(1.0, abs=0.01)
    assert 0.1 < lr_multiplier(50, 100, cfg) < 1.0


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    from tunelab.models.gpt import GPT, GPTSettings

    model = GPT(GPTSettings(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=5))
    optimizer = build_optimizer(model, TrainConfig(optimizer="muon", muon_lr=0.02, lr=1e-3))
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in optimizer.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in optimizer.adamw.param_groups for p in g["params"]}
    assert muon == {"blocks.0.attn.c_attn.weight", "blocks.0.attn.c_proj.weight", "blocks.0.mlp.c_fc.weight",
                    "blocks.0.mlp.c_proj.weight"}
    assert adamw == set(names.values()) - muon and "wte.weight" in adamw
    scheduler = build_scheduler(optimizer, 10, TrainConfig(optimizer="muon", warmup_ratio=0.5))
    x = torch.randint(0, 5, (2, 8))
    model(x, x)[1].backward()
    optimizer.step()
    scheduler.step()  # one schedule scales both optimizers' groups
    assert optimizer.muon.param_groups[0]["lr"] == pytest.approx(0.02 * 2 / 5)
    assert optimizer.adamw.param_groups[0]["lr"] == pytest.approx(1e-3 * 2 / 5)


class Scalar(nn.Module):
    """One weight w with loss w: every gradient is 1, so plain SGD at lr 1 moves w by -1 per step."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))


def sgd_with_lookahead(total_steps: int, every: int, decay: float) -> tuple[Scalar, torch.optim.Optimizer]:
    model = Scalar()
    cfg = TrainConfig(optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, lookahead_every=every,
                      lookahead_decay=decay)
    return model, build_optimizer(model, cfg, total_steps)


def take_steps(model: Scalar, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    seen = []
    for _ in range(steps):
        model.w.backward()
        optimizer.step()
        optimizer.zero_grad()
        seen.append(float(model.w.detach()))
    return seen


@pytest.mark.parametrize("total_steps, expected", [
    # 4 steps, every 2: the slow weight starts at step 2 (w = -2); at step 4 (beta = 0.5 (4/4)^3 = 0.5) it moves
    # half-way to w = -4, so -3, and the run ends there
    (4, [-1.0, -2.0, -3.0, -3.0]),
    # 5 steps: at step 4 beta = 0.5 (4/5)^3 = 0.256, slow = -2 + 0.744 (-4 + 2) = -3.488; step 5 moves to
    # -4.488 and, being the last, ends on the slow weight -3.488
    (5, [-1.0, -2.0, -3.0, -3.488, -3.488]),
])
def test_lookahead_moves_slow_weights_by_the_cubic_schedule_and_ends_on_them(total_steps, expected):
    model, optimizer = sgd_with_lookahead(total_steps, every=2, decay=0.5)
    assert take_steps(model, optimizer, total_steps) == pytest.approx(expected)


def test_lookahead_state_round_trips_through_the_optimizer_state_dict():
    """Stop after 5 of 9 steps, reload weights and optimizer state into fresh objects: the same path as
    training straight through (the slow weight and the step count are in the state dict)."""
    model, optimizer = sgd_with_lookahead(9, every=2, decay=0.9)
    straight = take_steps(model, optimizer, 9)
    first, optimizer = sgd_with_lookahead(9, every=2, decay=0.9)
    head = take_steps(first, optimizer, 5)
    state = optimizer.state_dict()
    assert "lookahead_slow" in state["state"][0] and state["param_groups"][0]["lookahead_step"] == 5
    second, resumed = sgd_with_lookahead(9, every=2, decay=0.9)
    second.load_state_dict(first.state_dict())
    resumed.load_state_dict(state)
    assert head + take_steps(second, resumed, 4) == pytest.approx(straight)
    assert straight[-1] != pytest.approx(-9.0)  # the averaging did change the path


def test_lookahead_with_muon_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="train.lookahead_every"):
        TrainConfig(optimizer="muon", lookahead_every=5)
