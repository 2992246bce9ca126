"""Error bars for ranking metrics: paired bootstrap over users (the same resample for both
models, no distribution assumed), and the smallest detectable lift."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

import numpy as np

DEFAULT_CONFIDENCE: Final = 0.95
DEFAULT_RESAMPLES: Final = 1_000
# Resamples drawn at once: 200 x 20,000 users is 32 MB of indices, 64 MB of paired values.
_BATCH: Final = 200


@dataclass(frozen=True)
class Interval:
    """A mean and its two-sided bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    confidence: float


@dataclass(frozen=True)
class Lift:
    """Relative lift (0.05 = +5 %) of a candidate over a baseline on the same users; ``lift``,
    ``low`` and ``high`` are None when the baseline has no hit at all."""

    candidate: float
    baseline: float
    lift: float | None
    low: float | None
    high: float | None
    confidence: float
    n_users: int

    def describe(self) -> str:
        """``+4.1% [-2.0%, +10.3%]``, or why there is no relative lift."""
        if self.lift is None or self.low is None or self.high is None:
            return f"{self.candidate:.4f} against a baseline of {self.baseline:.4f}"
        return f"{self.lift:+.1%} [{self.low:+.1%}, {self.high:+.1%}]"


def _resampled_sums(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Sums of every column of ``values`` (users x series) over ``resamples`` user resamples."""
    n = len(values)
    batches = (
        values[rng.integers(0, n, size=(min(_BATCH, resamples - start), n))].sum(axis=1)
        for start in range(0, resamples, _BATCH)
    )
    return np.concatenate(list(batches))


def _bounds(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0 * 100.0
    # Order statistics, not interpolation: an infinite lift must not turn a bound into NaN.
    low = np.percentile(samples, tail, method="lower")
    high = np.percentile(samples, 100.0 - tail, method="higher")
    return float(low), float(high)


def paired_bootstrap_lift(
    candidate: np.ndarray,
    baseline: np.ndarray,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Lift:
    """Relative lift of ``mean(candidate)`` over ``mean(baseline)`` (same users, same order),
    with a paired bootstrap confidence interval (same seed, same interval)."""
    c = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    n = len(c)
    c_mean, b_mean = (float(c.mean()), float(b.mean())) if n else (0.0, 0.0)
    if b_mean == 0.0:
        return Lift(c_mean, b_mean, None, None, None, confidence, n)
    sums = _resampled_sums(np.column_stack([c, b]), resamples, np.random.default_rng(seed))
    with np.errstate(divide="ignore", invalid="ignore"):
        # A resample whose baseline has no hit is an infinite lift (or none for 0 / 0).
        ratios = np.where(
            sums[:, 1] > 0, sums[:, 0] / sums[:, 1] - 1.0, np.where(sums[:, 0] > 0, np.inf, 0.0)
        )
    low, high = _bounds(ratios, confidence)
    return Lift(c_mean, b_mean, c_mean / b_mean - 1.0, low, high, confidence, n)


def bootstrap_mean(
    values: np.ndarray,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """The mean of ``values`` (one per user) with its bootstrap confidence interval."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return Interval(0.0, 0.0, 0.0, confidence)
    sums = _resampled_sums(v[:, None], resamples, np.random.default_rng(seed))
    low, high = _bounds(sums[:, 0] / len(v), confidence)
    return Interval(float(v.mean()), low, high, confidence)


def detectable_lift(
    n_users: int,
    baseline_hit_rate: float,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    power: float = 0.8,
) -> float:
    """The smallest relative lift a paired comparison on ``n_users`` detects with ``power``: a
    normal approximation where independent hits (the conservative case) give the per-user
    difference a variance of about ``2 p (1 - p)`` at the baseline's hit rate ``p``."""
    if n_users < 1 or not 0.0 < baseline_hit_rate < 1.0:
        return math.inf
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0) + NormalDist().inv_cdf(power)
    p = baseline_hit_rate
    return z * math.sqrt(2.0 * p * (1.0 - p) / n_users) / p
