"""The promotion gate, on known per-user results and real models."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from moovitamix_assets.defs.recommendation import registry
from moovitamix_assets.ml.evaluation import Metrics, evaluate_on_holdout
from moovitamix_assets.ml.gating import (
    NOT_ENOUGH_EVIDENCE,
    NOT_SIGNIFICANT,
    SIGNIFICANT,
    GateSettings,
    decide_promotion,
)

K = 10


def _metrics(hits: np.ndarray) -> Metrics:
    """Metrics of users with one held-out listen each, found (1) or not (0)."""
    users = np.arange(len(hits))
    per_user = pd.DataFrame(
        {
            "precision_at_k": hits / K,
            "recall_at_k": hits.astype(float),
            "map_at_k": hits.astype(float),
            "ndcg_at_k": hits.astype(float),
        },
        index=users,
    )
    mean = float(hits.mean()) if len(hits) else 0.0
    return Metrics(K, mean / K, mean, mean, mean, 0.5, len(hits), int(hits.sum()), per_user)


def _hits(n: int, rate: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).binomial(1, rate, size=n)


def test_a_lift_far_beyond_the_noise_is_promoted_and_described() -> None:
    decision = decide_promotion(
        _metrics(_hits(5_000, 0.3, 1)),
        _metrics(_hits(5_000, 0.2, 2)),
        "fallback v1",
        GateSettings(),
    )
    assert decision.promote and decision.verdict == SIGNIFICANT
    assert decision.figures["lift_low"] > 0
    assert decision.reason.startswith("lift +")
    assert "over fallback v1: significant, candidate promoted" in decision.reason
    assert decision.figures["users"] == 5_000


def test_a_lift_inside_the_noise_is_refused_as_not_significant() -> None:
    # 600 users: the serving model finds 60 held-out listens, the candidate 66 (+10 %), each
    # finding 30 the other misses: a difference a coin could make.
    baseline, candidate = np.zeros(600, dtype=int), np.zeros(600, dtype=int)
    baseline[:60], candidate[30:96] = 1, 1
    decision = decide_promotion(_metrics(candidate), _metrics(baseline), "als v2", GateSettings())
    assert not decision.promote and decision.verdict == NOT_SIGNIFICANT
    assert decision.figures["lift_low"] < 0 < decision.figures["lift_high"]
    assert "not significant, candidate refused" in decision.reason


def test_a_tiny_holdout_is_not_enough_evidence() -> None:
    candidate, serving = np.zeros(1_000, dtype=int), np.zeros(1_000, dtype=int)
    candidate[:12], serving[:2] = 1, 1
    decision = decide_promotion(
        _metrics(candidate), _metrics(serving), "fallback v1", GateSettings()
    )
    assert not decision.promote and decision.verdict == NOT_ENOUGH_EVIDENCE
    assert "not enough evidence, candidate refused" in decision.reason


def test_the_margin_is_applied_to_the_lower_bound() -> None:
    candidate, serving = _hits(20_000, 0.22, 4), _hits(20_000, 0.2, 5)
    assert decide_promotion(
        _metrics(candidate), _metrics(serving), "s", GateSettings(min_lift=0.0)
    ).promote
    strict = decide_promotion(
        _metrics(candidate), _metrics(serving), "s", GateSettings(min_lift=0.2)
    )
    assert not strict.promote and "(margin +20%)" in strict.reason


def test_a_serving_model_that_finds_nothing_loses_to_a_candidate_that_finds_enough() -> None:
    candidate = np.zeros(2_000, dtype=int)
    candidate[:40] = 1
    decision = decide_promotion(
        _metrics(candidate), _metrics(np.zeros(2_000, dtype=int)), "s", GateSettings()
    )
    assert decision.promote and decision.figures["lift"] is None


def test_models_scored_on_different_users_are_not_compared() -> None:
    with pytest.raises(ValueError, match="same held-out users"):
        decide_promotion(_metrics(np.ones(10)), _metrics(np.ones(11)), "s", GateSettings())
    with pytest.raises(ValueError, match="unknown gate metric"):
        GateSettings(metric="coverage")


def test_the_gate_promotes_als_over_global_popularity_on_structured_data(structured) -> None:
    results = evaluate_on_holdout(
        {"als": structured.als, "popularity": structured.popularity},
        structured.train,
        structured.split.test,
        catalogue_size=len(structured.data.tracks),
    )
    decision = decide_promotion(results["als"], results["popularity"], "pop", GateSettings())
    assert decision.promote, decision.reason


@pytest.mark.parametrize("seed", [21, 22, 23, 24, 25])
def test_the_gate_never_promotes_als_on_random_data(seed: int) -> None:
    from moovitamix_assets.ml.models import AlsParams, fit_popularity, train_als
    from moovitamix_assets.ml.split import time_based_split
    from moovitamix_assets_tests.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(3_000, 500, 30_000, structured=False, seed=seed)
    split = time_based_split(data.interactions, holdout_per_user=1)
    als = train_als(split.train, AlsParams(random_state=seed))
    results = evaluate_on_holdout(
        {"als": als, "popularity": fit_popularity(split.train, data.tracks)},
        split.train,
        split.test,
        catalogue_size=len(data.tracks),
    )
    decision = decide_promotion(
        results["als"], results["popularity"], "pop", GateSettings(seed=seed)
    )
    assert not decision.promote, decision.reason


def test_unbounded_figures_are_recorded_as_null_for_json() -> None:
    candidate, serving = np.zeros(1_000, dtype=int), np.zeros(1_000, dtype=int)
    candidate[:8], serving[:1] = 1, 1
    decision = decide_promotion(_metrics(candidate), _metrics(serving), "s", GateSettings())
    # Some resamples lose the baseline's one hit: the registry records that bound as null.
    assert not math.isfinite(decision.figures["lift_high"])
    assert json.loads(registry._json(decision.figures))["lift_high"] is None
    assert 0 < decision.figures["detectable_lift"] < 100
