import pytest

from moovitamix_assets.ml.evaluation import Metrics, evaluate_on_holdout
from moovitamix_assets.ml.gating import decay_trigger, decide_promotion, growth_trigger


def _metrics(precision: float) -> Metrics:
    return Metrics(
        k=10,
        precision_at_k=precision,
        recall_at_k=precision * 5,
        map_at_k=precision * 2,
        ndcg_at_k=precision * 3,
        coverage=0.5,
        n_users_evaluated=100,
    )


def test_promotes_a_candidate_that_beats_the_baseline_without_production() -> None:
    decision = decide_promotion(_metrics(0.06), _metrics(0.03), None, 0.5, 0.05)
    assert decision.promote
    assert decision.reason.startswith("promoted:")
    assert "no production model" in decision.reason
    assert decision.figures["lift_over_baseline"] == pytest.approx(1.0)
    assert decision.figures["production"] is None


def test_refuses_a_candidate_below_the_required_lift() -> None:
    decision = decide_promotion(_metrics(0.04), _metrics(0.03), None, 0.5, 0.05)
    assert not decision.promote
    assert "does not beat the popularity baseline" in decision.reason
    assert "50%" in decision.reason
    assert decision.figures["required_vs_baseline"] == pytest.approx(0.045)


def test_refuses_a_candidate_that_regresses_against_production() -> None:
    decision = decide_promotion(_metrics(0.06), _metrics(0.03), _metrics(0.07), 0.5, 0.05)
    assert not decision.promote
    assert "regresses against production 0.0700" in decision.reason
    assert decision.figures["change_vs_production"] == pytest.approx(0.06 / 0.07 - 1)


def test_promotes_within_the_tolerated_regression() -> None:
    decision = decide_promotion(_metrics(0.067), _metrics(0.03), _metrics(0.07), 0.5, 0.05)
    assert decision.promote
    assert "within 5% of production" in decision.reason


def test_gate_compares_the_chosen_metric() -> None:
    candidate = Metrics(10, 0.01, 0.1, 0.1, 0.5, 0.5, 100)
    baseline = Metrics(10, 0.02, 0.1, 0.1, 0.2, 0.5, 100)
    assert not decide_promotion(candidate, baseline, None, 0.1, 0.05).promote
    assert decide_promotion(candidate, baseline, None, 0.1, 0.05, metric="ndcg_at_k").promote
    with pytest.raises(ValueError, match="unknown metric"):
        decide_promotion(candidate, baseline, None, 0.1, 0.05, metric="accuracy")


def test_zero_against_a_zero_baseline_is_not_a_lift() -> None:
    assert not decide_promotion(_metrics(0.0), _metrics(0.0), None, 0.0, 0.05).promote
    assert decide_promotion(_metrics(0.01), _metrics(0.0), None, 0.5, 0.05).promote


def test_gate_promotes_als_on_structured_data(structured) -> None:
    results = evaluate_on_holdout(
        {"als": structured.als, "popularity": structured.popularity},
        structured.train,
        structured.split.test,
        catalogue_size=len(structured.data.tracks),
    )
    decision = decide_promotion(results["als"], results["popularity"], None, 0.5, 0.05)
    assert decision.promote, decision.reason


def test_gate_refuses_als_trained_on_random_data(random_data) -> None:
    results = evaluate_on_holdout(
        {"als": random_data.als, "popularity": random_data.popularity},
        random_data.train,
        random_data.split.test,
        catalogue_size=len(random_data.data.tracks),
    )
    # Sanity: enough hits that the comparison is not noise-dominated.
    assert results["popularity"].precision_at_k * 10 * random_data.split.n_users_held_out > 200
    decision = decide_promotion(results["als"], results["popularity"], None, 0.5, 0.05)
    assert not decision.promote
    assert "does not beat the popularity baseline" in decision.reason


def test_growth_trigger() -> None:
    fired, reason = growth_trigger(1_200, 1_000, 0.2)
    assert fired
    assert "+20.0%" in reason
    fired, reason = growth_trigger(1_100, 1_000, 0.2)
    assert not fired
    assert reason.startswith("not fired")
    assert growth_trigger(10, 0, 0.2)[0]
    assert not growth_trigger(0, 0, 0.2)[0]
    with pytest.raises(ValueError):
        growth_trigger(10, 5, 0.0)


def test_decay_trigger() -> None:
    fired, reason = decay_trigger(0.01, 0.02)
    assert fired
    assert "0.0100 < threshold 0.0200" in reason
    assert not decay_trigger(0.02, 0.02)[0]
