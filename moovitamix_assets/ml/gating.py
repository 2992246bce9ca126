"""Promotion gate of a candidate model and the triggers that ask for retraining."""

from dataclasses import dataclass, field

from moovitamix_assets.ml.evaluation import METRIC_NAMES, Metrics


@dataclass(frozen=True)
class PromotionDecision:
    """Whether to promote the candidate, why, and the figures the decision rests on."""

    promote: bool
    reason: str
    figures: dict[str, float | str | None] = field(default_factory=dict)


def _relative_change(value: float, reference: float) -> float | None:
    # A zero reference has no meaningful relative change; callers compare absolutely instead.
    return None if reference == 0 else value / reference - 1.0


def decide_promotion(
    candidate: Metrics,
    baseline: Metrics,
    production: Metrics | None,
    min_lift_over_baseline: float,
    max_regression: float,
    metric: str = "precision_at_k",
) -> PromotionDecision:
    """Promote when the candidate beats the baseline by a relative margin without regressing.

    The candidate must reach ``baseline * (1 + min_lift_over_baseline)`` and, when a production
    model exists, ``production * (1 - max_regression)``, both on ``metric``.

    Args:
        candidate: Metrics of the newly trained model.
        baseline: Metrics of the popularity baseline on the same held-out data.
        production: Metrics of the current production model on the same data, or None.
        min_lift_over_baseline: Required relative lift over the baseline (0.1 = +10 %).
        max_regression: Tolerated relative drop against production (0.05 = -5 %).
        metric: Name of the metric compared (a field of ``Metrics``).

    Returns:
        The decision with a human-readable reason and the compared figures.

    Raises:
        ValueError: On an unknown metric or a negative margin.
    """
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRIC_NAMES)}")
    if min_lift_over_baseline < 0 or max_regression < 0:
        raise ValueError("min_lift_over_baseline and max_regression must be >= 0")

    value = float(getattr(candidate, metric))
    base = float(getattr(baseline, metric))
    required_vs_baseline = base * (1.0 + min_lift_over_baseline)
    figures: dict[str, float | str | None] = {
        "metric": metric,
        "candidate": value,
        "baseline": base,
        "lift_over_baseline": _relative_change(value, base),
        "required_vs_baseline": required_vs_baseline,
        "production": None,
        "change_vs_production": None,
        "required_vs_production": None,
    }
    # With a zero baseline any positive score is a lift; zero against zero is not.
    beats_baseline = value >= required_vs_baseline and value > base
    if not beats_baseline:
        return PromotionDecision(
            promote=False,
            reason=(
                f"refused: {metric} {value:.4f} does not beat the popularity baseline "
                f"{base:.4f} by the required {min_lift_over_baseline:.0%} "
                f"(needs >= {required_vs_baseline:.4f})"
            ),
            figures=figures,
        )

    lift_text = f"{metric} {value:.4f} beats the baseline {base:.4f}"
    if production is None:
        return PromotionDecision(
            promote=True,
            reason=f"promoted: {lift_text}; no production model to compare with",
            figures=figures,
        )

    prod = float(getattr(production, metric))
    required_vs_production = prod * (1.0 - max_regression)
    figures.update(
        production=prod,
        change_vs_production=_relative_change(value, prod),
        required_vs_production=required_vs_production,
    )
    if value < required_vs_production:
        return PromotionDecision(
            promote=False,
            reason=(
                f"refused: {metric} {value:.4f} regresses against production {prod:.4f} by more "
                f"than the tolerated {max_regression:.0%} (needs >= {required_vs_production:.4f})"
            ),
            figures=figures,
        )
    return PromotionDecision(
        promote=True,
        reason=(
            f"promoted: {lift_text} and stays within {max_regression:.0%} of production {prod:.4f}"
        ),
        figures=figures,
    )


def growth_trigger(
    current_interactions: int, snapshot_interactions: int, threshold_share: float
) -> tuple[bool, str]:
    """Fire when interactions grew by at least ``threshold_share`` since the model's snapshot."""
    if threshold_share <= 0:
        raise ValueError(f"threshold_share must be > 0, got {threshold_share}")
    if snapshot_interactions <= 0:
        fired = current_interactions > 0
        state = "fired" if fired else "not fired"
        return fired, (f"{state}: no interactions at the last training, {current_interactions} now")
    growth = (current_interactions - snapshot_interactions) / snapshot_interactions
    fired = growth >= threshold_share
    comparison = ">=" if fired else "<"
    return fired, (
        f"{'fired' if fired else 'not fired'}: interactions grew {growth:+.1%} "
        f"({snapshot_interactions} -> {current_interactions}), {comparison} the "
        f"{threshold_share:.0%} threshold"
    )


def decay_trigger(production_metric: float, threshold: float) -> tuple[bool, str]:
    """Fire when the production model's metric fell below ``threshold``."""
    fired = production_metric < threshold
    comparison = "<" if fired else ">="
    return fired, (
        f"{'fired' if fired else 'not fired'}: production metric {production_metric:.4f} "
        f"{comparison} threshold {threshold:.4f}"
    )
