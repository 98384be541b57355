"""The plan as a user reads it on the terminal: calibration, the recipe as written, the fitting setting."""

from __future__ import annotations

from tunelab.plan.planner import Choice, Plan
from tunelab.runner import format_seconds


def setting_line(pick: Choice) -> str:
    return (f"train.batch_size={pick.batch_size} train.grad_accum={pick.grad_accum}: peak {pick.peak_mb:,.0f} MB, "
            f"{pick.step_seconds:.3g} s per optimizer step")


def evaluation_line(plan: Plan) -> str:
    final = f"the final one {plan.final_eval_seconds:.3g} s"
    if not plan.evaluations:
        return final
    return f"{plan.evaluations} periodic x {plan.periodic_eval_seconds:.3g} s + {final}"


def plan_lines(plan: Plan, description: str, fallback: dict | None = None) -> list[str]:
    lines = [f"plan: {plan.recipe} ({description})"]
    for point in plan.calibration:
        longest = f", longest {point['longest_tokens']} tokens" if point.get("longest_tokens") else ""
        lines.append(f"  calibration: micro-batch {point['size']}: peak {point['peak_mb']:,.0f} MB{longest}, "
                     f"{point['seconds']:.3g} s per micro-step")
    lines.append(f"  memory: loading reached {plan.loading_peak_mb:,.0f} MB; a training step peaks at "
                 f"{plan.memory.a:,.0f} + {plan.memory.b:,.1f}·b MB for a micro-batch of b")
    if plan.eval_peak_mb is not None:
        lines.append(f"  evaluations: {evaluation_line(plan)}, peak {plan.eval_peak_mb:,.0f} MB")
    train_s = plan.steps * plan.configured.step_seconds
    if plan.eval_seconds is None:
        eta = f"ETA {format_seconds(train_s)} for {plan.steps:,} steps (evaluations not timed: --no-eval)"
    else:
        eta = f"ETA {format_seconds(train_s + plan.eval_seconds)} ({format_seconds(train_s)} for " \
              f"{plan.steps:,} steps + {format_seconds(plan.eval_seconds)} of evaluations)"
    lines.append(f"  as written: {setting_line(plan.configured)}; {eta}")
    if plan.memory_limit_mb is not None:
        limit = f"{plan.memory_limit_mb:,.0f} MB"
        if plan.chosen is not None:
            same = plan.chosen.batch_size == plan.configured.batch_size
            lines.append(f"  fits {limit}: {setting_line(plan.chosen)}; ETA "
                         f"{format_seconds(plan.eta_seconds)}" + (" (the recipe as written)" if same else ""))
        elif fallback and fallback.get("chosen"):
            pick = fallback["chosen"]
            lines.append(f"  fits {limit} only with gradient checkpointing: train.gradient_checkpointing=true "
                         f"train.batch_size={pick['batch_size']} train.grad_accum={pick['grad_accum']}: peak "
                         f"{pick['peak_mb']:,.0f} MB, {pick['step_seconds']:.3g} s per step; ETA "
                         f"{format_seconds(fallback['eta_seconds'])}")
        else:
            smallest = plan.memory.a + plan.memory.b
            lines.append(f"  does not fit {limit}: even a micro-batch of 1 peaks at about "
                         f"{max(smallest, plan.loading_peak_mb):,.0f} MB; lower model.max_length, load the "
                         "base with model.quantize=4bit, or use a smaller model")
    if plan.time_limit_s is not None:
        if plan.eta_seconds <= plan.time_limit_s:
            lines.append(f"  fits {format_seconds(plan.time_limit_s)}: ETA {format_seconds(plan.eta_seconds)}")
        else:
            per_step = (plan.chosen or plan.configured).step_seconds
            if plan.periodic_eval_seconds and plan.evaluations:  # evaluations come every eval_every steps
                per_step += plan.periodic_eval_seconds * plan.evaluations / plan.steps
            left = plan.time_limit_s - (plan.final_eval_seconds or 0.0)
            steps = int(left // per_step) if per_step else plan.steps
            if steps < 1:
                lines.append(f"  does not fit {format_seconds(plan.time_limit_s)}: the final evaluation alone takes "
                             f"{format_seconds(plan.final_eval_seconds or 0.0)} (evaluate fewer examples: "
                             "data.eval_limit)")
            else:
                lines.append(f"  does not fit {format_seconds(plan.time_limit_s)} (ETA "
                             f"{format_seconds(plan.eta_seconds)}): train.max_steps={steps} would")
    return lines


def print_plan(plan: Plan, description: str, fallback: dict | None = None) -> None:
    print("\n".join(plan_lines(plan, description, fallback)))
