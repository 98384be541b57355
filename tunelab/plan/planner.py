"""From a calibration to a plan: peak memory and step time for any micro-batch, the micro-batch x
accumulation that fits a memory limit, and the run's ETA.

With two calibrated sizes b1 < b2 (`tunelab.plan.calibrate`), both costs are lines in the micro-batch b:

    peak(b)    = p0 + p1·b        p1 = (peak(b2) − peak(b1)) / (b2 − b1)   (activations per example)
    t_micro(b) = t0 + t1·b        likewise from the measured seconds per micro-step

An optimizer step of global batch G = b·k takes k micro-steps: t_step = k·t_micro(b) = G·t0/b + G·t1, so
for a fixed G the largest b that fits is the fastest. The plan keeps the recipe's G
(train.batch_size × train.grad_accum) and picks b among the divisors of G. Peak memory of the whole run is
max(what loading the model and data already reached, peak(b), an evaluation's peak); the ETA is
optimizer steps × t_step plus the evaluations, each timed once before training (`tunelab.plan.eval_cost`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tunelab.plan.calibrate import Calibration
from tunelab.plan.eval_cost import EvalCost, periodic_evaluations


@dataclass
class Line:
    """y = a + b·x through two measured points (flat when only one size could be measured)."""

    a: float
    b: float

    @classmethod
    def through(cls, x1: float, y1: float, x2: float, y2: float) -> Line:
        slope = max(0.0, (y2 - y1) / (x2 - x1)) if x2 != x1 else 0.0
        return cls(y1 - slope * x1, slope)

    def at(self, x: float) -> float:
        return self.a + self.b * x


@dataclass
class Choice:
    batch_size: int
    grad_accum: int
    peak_mb: float
    step_seconds: float
    fits: bool


@dataclass
class Plan:
    recipe: str
    global_batch: int
    steps: int
    loading_peak_mb: float
    memory: Line
    micro_seconds: Line
    configured: Choice
    chosen: Choice | None
    memory_limit_mb: float | None
    time_limit_s: float | None
    gradient_checkpointing: bool
    calibration: list[dict]
    evaluations: int = 0  # periodic evaluations the run makes (the final one comes on top)
    periodic_eval_seconds: float | None = None  # one periodic evaluation; None when none or not timed
    final_eval_seconds: float | None = None  # None when evaluations were not timed (--no-eval)
    eval_peak_mb: float | None = None

    @property
    def eval_seconds(self) -> float | None:
        """Every periodic evaluation and the final one."""
        if self.final_eval_seconds is None:
            return None
        return self.evaluations * (self.periodic_eval_seconds or 0.0) + self.final_eval_seconds

    @property
    def eta_seconds(self) -> float:
        pick = self.chosen or self.configured
        return self.steps * pick.step_seconds + (self.eval_seconds or 0.0)

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(eta_seconds=self.eta_seconds, eval_seconds=self.eval_seconds)
        return out


def lines_from(calibration: Calibration) -> tuple[Line, Line]:
    first, last = calibration.points[0], calibration.points[-1]
    memory = Line.through(first.size, first.peak_mb, last.size, last.peak_mb)
    seconds = Line.through(first.size, first.seconds, last.size, last.seconds)
    return memory, seconds


def choice(batch_size: int, global_batch: int, memory: Line, seconds: Line, loading_peak_mb: float,
           limit_mb: float | None) -> Choice:
    """`loading_peak_mb`: the floor no micro-batch goes under (loading, and the evaluations when timed)."""
    accum = max(1, global_batch // batch_size)
    peak = max(loading_peak_mb, memory.at(batch_size))
    return Choice(batch_size, accum, peak, accum * seconds.at(batch_size), limit_mb is None or peak <= limit_mb)


def make_plan(recipe: str, calibration: Calibration, batch_size: int, grad_accum: int, steps: int,
              loading_peak_mb: float, memory_limit_mb: float | None = None, time_limit_s: float | None = None,
              gradient_checkpointing: bool = False, evals: EvalCost | None = None,
              eval_every: int | None = None) -> Plan:
    """The recipe's own setting predicted, and with a memory limit the largest fitting micro-batch."""
    memory, seconds = lines_from(calibration)
    global_batch = batch_size * grad_accum
    eval_peak = calibration.warm_mb + evals.extra_mb if evals else None
    floor = max(loading_peak_mb, eval_peak or 0.0)
    configured = choice(batch_size, global_batch, memory, seconds, floor, memory_limit_mb)
    chosen = None
    if memory_limit_mb is not None:
        divisors = [b for b in range(global_batch, 0, -1) if global_batch % b == 0]
        fitting = [choice(b, global_batch, memory, seconds, floor, memory_limit_mb) for b in divisors]
        chosen = next((c for c in fitting if c.fits), None)
    return Plan(recipe, global_batch, steps, loading_peak_mb, memory, seconds, configured, chosen, memory_limit_mb,
                time_limit_s, gradient_checkpointing, [asdict(p) for p in calibration.points],
                periodic_evaluations(steps, eval_every),
                evals.periodic_seconds if evals else None, evals.final_seconds if evals else None,
                eval_peak)
