"""Is one run really better than another? The three tests behind the comparison table's `vs best` column.

Same examples, a right/wrong outcome per example (accuracy) — McNemar's exact test. Of the n examples,
only the discordant ones carry information: b = A right and B wrong, c = A wrong and B right. Under
H0 (same accuracy) each discordant example is a fair coin, so b ~ Binomial(b + c, 1/2) and
    p = min(1, 2 · P(X ≤ min(b, c))),  X ~ Binomial(b + c, 1/2)        (scipy.stats.binomtest)
e.g. b = 10, c = 2: p = 2 · (1 + 12 + 66) / 2^12 = 0.0386.

Same examples, any score (per-question F1/EM, sentence BLEU, per-example loss, or a whole-sample
statistic such as macro-F1) — the paired bootstrap (Efron & Tibshirani 1993, ch. 16; Koehn 2004 for MT).
Draw B resamples of n example indices with replacement, the same indices for both runs, and recompute
δ*_b = s_A(resample) − s_B(resample). The (1 − α) interval is the percentile interval of δ*; the two-sided
p-value tests δ = 0 by centring the bootstrap distribution on H0 (Berg-Kirkpatrick et al. 2012):
    p = (1 + #{b : |δ*_b − δ̂| ≥ |δ̂|}) / (B + 1)
Resampling is seeded, so the same runs always give the same interval and p.

Different seeds of one configuration — each seed is one draw of the run's metric. A group of n seeds
shows mean ± sample std s and the t interval  mean ± t_{1−α/2, n−1} · s / √n; two groups are compared by
Welch's t-test (unequal variances, Welch–Satterthwaite degrees of freedom; scipy.stats.ttest_ind).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
SEED = 0
CHUNK = 250  # resamples drawn at once: (CHUNK, n) indices stay small for n of tens of thousands

Statistic = Callable[[np.ndarray], np.ndarray]  # (B, n) example indices -> (B,) metric values


@dataclass(frozen=True)
class Difference:
    """row − reference on one metric: the estimate, its (1 − alpha) interval, the two-sided p, the test."""

    diff: float
    low: float | None
    high: float | None
    p: float
    test: str
    n: int


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[float, int, int]:
    """(p, b, c): the exact two-sided McNemar test on two runs' right/wrong vectors over the same examples."""
    a, b_vec = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    b, c = int(np.sum(a & ~b_vec)), int(np.sum(~a & b_vec))
    from scipy import stats  # here, not at import: every `tunelab run` imports this module, few call it

    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return min(1.0, p), b, c


def mean_statistic(scores: np.ndarray) -> Statistic:
    """The statistic 'mean per-example score' (accuracy from 0/1, mean F1, mean loss) over resampled indices."""
    values = np.asarray(scores, dtype=np.float64)
    return lambda index: values[index].mean(axis=1)


def bootstrap_deltas(stat_a: Statistic, stat_b: Statistic, n: int, resamples: int = RESAMPLES,
                     seed: int = SEED) -> np.ndarray:
    """δ*_b = s_A − s_B on `resamples` shared resamples of n examples (the pairing: same indices)."""
    rng = np.random.default_rng(seed)
    deltas = []
    for start in range(0, resamples, CHUNK):
        index = rng.integers(0, n, size=(min(CHUNK, resamples - start), n))
        deltas.append(stat_a(index) - stat_b(index))
    return np.concatenate(deltas)


def paired_bootstrap(stat_a: Statistic, stat_b: Statistic, n: int, alpha: float = 0.05,
                     resamples: int = RESAMPLES, seed: int = SEED, test: str = "paired bootstrap") -> Difference:
    """A − B with its percentile (1 − alpha) interval and the centred two-sided bootstrap p-value."""
    everything = np.arange(n)[None, :]
    observed = float(stat_a(everything)[0] - stat_b(everything)[0])
    deltas = bootstrap_deltas(stat_a, stat_b, n, resamples, seed)
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    extreme = int(np.sum(np.abs(deltas - observed) >= abs(observed) - 1e-12))
    p = 1.0 if observed == 0 else (1 + extreme) / (resamples + 1)
    return Difference(observed, float(low), float(high), min(1.0, p), test, n)


def accuracy_difference(correct_a: np.ndarray, correct_b: np.ndarray, alpha: float = 0.05,
                        resamples: int = RESAMPLES, seed: int = SEED) -> Difference:
    """Accuracy A − B: McNemar's exact p, with the paired-bootstrap interval of the difference."""
    p, _, _ = mcnemar_exact(correct_a, correct_b)
    interval = paired_bootstrap(mean_statistic(correct_a), mean_statistic(correct_b), len(correct_a), alpha,
                                resamples, seed)
    return Difference(interval.diff, interval.low, interval.high, p, "McNemar exact", len(correct_a))


def seed_interval(values: list[float], alpha: float = 0.05) -> tuple[float, float] | None:
    """The t interval of the mean over seeds, mean ± t_{1−α/2, n−1} · s/√n; None under 2 seeds."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return None
    from scipy import stats

    half = float(stats.t.ppf(1 - alpha / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return float(x.mean()) - half, float(x.mean()) + half


def welch_difference(values_a: list[float], values_b: list[float], alpha: float = 0.05) -> Difference | None:
    """mean(A) − mean(B) over seeds: Welch's t-test p and the Welch–Satterthwaite t interval; None when a
    side has fewer than 2 seeds."""
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return None
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:  # every seed scored the same on both sides: no spread to test against
        return Difference(diff, diff, diff, 1.0 if diff == 0 else 0.0, "Welch t (seeds)", len(a) + len(b))
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    from scipy import stats

    half = float(stats.t.ppf(1 - alpha / 2, df) * np.sqrt(va + vb))
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Difference(diff, diff - half, diff + half, p, "Welch t (seeds)", len(a) + len(b))
