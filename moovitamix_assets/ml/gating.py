"""Promotion gate: promote a candidate only when the lower bound of its lift over what serves
(on the same held-out users) clears the margin; a lift inside the noise changes nothing."""

from dataclasses import dataclass
from typing import Final, NamedTuple

from moovitamix_assets.ml.evaluation import PER_USER_COLUMNS, Metrics
from moovitamix_assets.ml.significance import (
    DEFAULT_CONFIDENCE,
    detectable_lift,
    paired_bootstrap_lift,
)

SIGNIFICANT: Final = "significant"
NOT_SIGNIFICANT: Final = "not significant"
NOT_ENOUGH_EVIDENCE: Final = "not enough evidence"


@dataclass(frozen=True)
class GateSettings:
    """How sure the gate must be before it replaces what serves."""

    metric: str = "precision_at_k"
    min_lift: float = 0.0
    confidence: float = DEFAULT_CONFIDENCE
    # Fewer held-out listens found than this, by both models together, decide nothing.
    min_hits: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        # The other settings come through CandidateModelConfig, whose fields bound them.
        if self.metric not in PER_USER_COLUMNS:
            names = ", ".join(PER_USER_COLUMNS)
            raise ValueError(f"unknown gate metric {self.metric!r}; expected one of {names}")


class PromotionDecision(NamedTuple):
    """Whether to promote the candidate, the verdict in words, and the figures behind it."""

    promote: bool
    verdict: str
    reason: str
    figures: dict[str, float | int | str | None]


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
    outcome = "candidate promoted" if promote else "candidate refused"
    margin = f" (margin {settings.min_lift:+.0%})" if settings.min_lift else ""
    reason = (
        f"lift {lift.describe()} over {serving_name}: {verdict}{margin}, {outcome} ({evidence})"
    )
    return PromotionDecision(promote, verdict, reason, figures)
