"""The statistics behind the gate, against cases whose answer is known."""

import numpy as np
import pytest

from moovitamix_assets.ml.significance import (
    bootstrap_mean,
    detectable_lift,
    paired_bootstrap_lift,
)


def test_identical_models_have_no_lift_and_an_interval_around_zero() -> None:
    hits = np.random.default_rng(1).binomial(1, 0.1, size=2_000).astype(float)
    lift = paired_bootstrap_lift(hits, hits, seed=3)
    assert lift.lift == 0.0
    # Paired: every resample has the same sums on both sides, so the interval is a point.
    assert lift.low == lift.high == 0.0


def test_a_real_lift_is_inside_its_interval_and_the_interval_excludes_zero() -> None:
    rng = np.random.default_rng(2)
    baseline = rng.binomial(1, 0.10, size=20_000).astype(float)
    candidate = rng.binomial(1, 0.13, size=20_000).astype(float)
    lift = paired_bootstrap_lift(candidate, baseline, seed=4)
    assert lift.lift == pytest.approx(candidate.mean() / baseline.mean() - 1)
    assert lift.low is not None and lift.high is not None
    assert 0 < lift.low < 0.3 < lift.high
    assert lift.n_users == 20_000


def test_noise_gives_an_interval_that_straddles_zero() -> None:
    rng = np.random.default_rng(5)
    a = rng.binomial(1, 0.02, size=1_000).astype(float)
    b = rng.binomial(1, 0.02, size=1_000).astype(float)
    lift = paired_bootstrap_lift(a, b, seed=6)
    assert lift.low is not None and lift.high is not None
    assert lift.low < 0 < lift.high


def test_the_interval_has_its_nominal_coverage() -> None:
    """Over repeated samples of a known truth (+25 %), a 90 % interval covers it ~90 % of times."""
    rng = np.random.default_rng(7)
    covered = 0
    trials = 200
    for trial in range(trials):
        baseline = rng.binomial(1, 0.2, size=2_000).astype(float)
        candidate = rng.binomial(1, 0.25, size=2_000).astype(float)
        lift = paired_bootstrap_lift(candidate, baseline, confidence=0.9, resamples=400, seed=trial)
        covered += lift.low <= 0.25 <= lift.high
    assert 0.82 <= covered / trials <= 0.97


def test_same_seed_same_interval_and_a_zero_baseline_has_no_relative_lift() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.random(500), rng.random(500)
    assert paired_bootstrap_lift(a, b, seed=1) == paired_bootstrap_lift(a, b, seed=1)
    none = paired_bootstrap_lift(np.ones(10), np.zeros(10))
    assert none.lift is None and "against a baseline of 0.0000" in none.describe()
    with pytest.raises(ValueError):
        paired_bootstrap_lift(np.ones(3), np.ones(4))


def test_bootstrap_mean_matches_the_normal_interval_on_a_large_sample() -> None:
    values = np.random.default_rng(9).binomial(1, 0.3, size=10_000).astype(float)
    interval = bootstrap_mean(values, seed=2)
    half_width = 1.96 * np.sqrt(0.3 * 0.7 / 10_000)
    assert interval.mean == pytest.approx(values.mean())
    assert interval.high - interval.low == pytest.approx(2 * half_width, rel=0.15)


def test_detectable_lift_shrinks_with_the_square_root_of_users() -> None:
    small = detectable_lift(1_000, 0.1)
    large = detectable_lift(100_000, 0.1)
    assert large == pytest.approx(small / 10)
    # 100,000 users at a 10 % hit rate resolve a lift of about 4 % (95 % level, 80 % power).
    assert 0.03 < large < 0.045
    assert detectable_lift(0, 0.1) == float("inf")
