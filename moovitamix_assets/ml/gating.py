"""Promotion gate of a candidate model and the triggers that ask for retraining.

The gate promotes only when the lower bound of the lift over what serves (on the same held-out
users) clears the margin: a lift inside the noise is no reason to change what serves.
"""

import math
from dataclasses import dataclass, field
from typing import Final

from moovitamix_assets.ml.evaluation import PER_USER_COLUMNS, Metrics
from moovitamix_assets.ml.significance import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    Interval,
    detectable_lift,
    paired_bootstrap_lift,
)

SIGNIFICANT: Final = "significant"
NOT_SIGNIFICANT: Final = "not significant"
NOT_ENOUGH_EVIDENCE: Final = "not enough evidence"

DEFAULT_MIN_LIFT: Final = 0.0
# Fewer held-out listens found than this, by both models together, decide nothing.
DEFAULT_MIN_HITS: Final = 30


@dataclass(frozen=True)
class GateSettings:
    """How sure the gate must be before it replaces what serves."""

    metric: str = "precision_at_k"
    min_lift: float = DEFAULT_MIN_LIFT
    confidence: float = DEFAULT_CONFIDENCE
    min_hits: int = DEFAULT_MIN_HITS
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0

    def __post_init__(self) -> None:
        if self.metric not in PER_USER_COLUMNS:
            names = ", ".join(PER_USER_COLUMNS)
            raise ValueError(f"unknown gate metric {self.metric!r}; expected one of {names}")
        if self.min_lift < 0:
            raise ValueError(f"min_lift must be >= 0, got {self.min_lift}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.min_hits < 0:
            raise ValueError(f"min_hits must be >= 0, got {self.min_hits}")


@dataclass(frozen=True)
class PromotionDecision:
    """Whether to promote the candidate, the verdict in words, and the figures behind it."""

    promote: bool
    verdict: str
    reason: str
    figures: dict[str, float | int | str | None] = field(default_factory=dict)


def decide_promotion(
    candidate: Metrics, serving: Metrics, serving_name: str, settings: GateSettings
) -> PromotionDecision:
    """Promote when the candidate's lift over ``serving_name`` clears the noise and the margin."""
    metric = settings.metric
    if not candidate.per_user.index.equals(serving.per_user.index):
        raise ValueError("candidate and serving model must be scored on the same held-out users")
    lift = paired_bootstrap_lift(
        candidate.per_user_values(metric),
        serving.per_user_values(metric),
        confidence=settings.confidence,
        resamples=settings.resamples,
        seed=settings.seed,
    )
    figures: dict[str, float | int | str | None] = {
        "metric": metric,
        "candidate": lift.candidate,
        "serving": lift.baseline,
        "serving_model": serving_name,
        "lift": lift.lift,
        "lift_low": lift.low,
        "lift_high": lift.high,
        "confidence": settings.confidence,
        "min_lift": settings.min_lift,
        "min_hits": settings.min_hits,
        "users": lift.n_users,
        "candidate_hits": candidate.hits,
        "serving_hits": serving.hits,
        # What this holdout can resolve at all: a lift below it is indistinguishable from noise.
        "detectable_lift": detectable_lift(
            lift.n_users,
            serving.hits / lift.n_users if lift.n_users else 0.0,
            confidence=settings.confidence,
        ),
    }
    evidence = (
        f"{metric} {lift.candidate:.4g} vs {lift.baseline:.4g}, {lift.n_users} users, "
        f"{candidate.hits} vs {serving.hits} hits"
    )
    if candidate.hits + serving.hits < settings.min_hits:
        verdict, promote = NOT_ENOUGH_EVIDENCE, False
    elif lift.lift is None:
        # What serves found no held-out listen at all, and the candidate found enough of them.
        verdict, promote = SIGNIFICANT, True
    else:
        promote = lift.low is not None and lift.low > settings.min_lift
        verdict = SIGNIFICANT if promote else NOT_SIGNIFICANT
    figures["verdict"] = verdict
    # An unbounded figure (no hit at all in some resamples) is unknown, not a number.
    figures = {
        name: None if isinstance(value, float) and not math.isfinite(value) else value
        for name, value in figures.items()
    }
    outcome = "candidate promoted" if promote else "candidate refused"
    margin = f" (margin {settings.min_lift:+.0%})" if settings.min_lift else ""
    reason = (
        f"lift {lift.describe()} over {serving_name}: {verdict}{margin}, {outcome} ({evidence})"
    )
    return PromotionDecision(promote=promote, verdict=verdict, reason=reason, figures=figures)


def growth_trigger(
    current_interactions: int, snapshot_interactions: int, threshold_share: float
) -> tuple[bool, str]:
    """Fire when interactions grew by at least ``threshold_share`` since the model's snapshot."""
    if threshold_share <= 0:
        raise ValueError(f"threshold_share must be > 0, got {threshold_share}")
    if snapshot_interactions <= 0:
        fired = current_interactions > 0
        detail = f"no interactions at the last training, {current_interactions} now"
    else:
        growth = (current_interactions - snapshot_interactions) / snapshot_interactions
        fired = growth >= threshold_share
        detail = (
            f"interactions grew {growth:+.1%} ({snapshot_interactions} -> {current_interactions}),"
            f" {'>=' if fired else '<'} the {threshold_share:.0%} threshold"
        )
    return fired, f"{'fired' if fired else 'not fired'}: {detail}"


def decay_trigger(production: Interval, threshold: float) -> tuple[bool, str]:
    """Fire when the production metric is below ``threshold`` beyond its confidence interval."""
    fired = production.high < threshold
    return fired, (
        f"{'fired' if fired else 'not fired'}: production metric {production.mean:.4f} "
        f"[{production.low:.4f}, {production.high:.4f}], upper bound {'<' if fired else '>='} "
        f"threshold {threshold:.4f}"
    )
