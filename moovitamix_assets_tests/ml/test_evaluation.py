import math

import pandas as pd
import pytest

from moovitamix_assets.ml.evaluation import evaluate


def _recs(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "track_id", "rank"])
    return frame.assign(score=0.0)


RECS = _recs(
    [
        # user 1 hits at rank 2 (and at rank 4, beyond k)
        (1, 101, 1),
        (1, 102, 2),
        (1, 103, 3),
        (1, 104, 4),
        # user 2 hits at ranks 1 and 3
        (2, 201, 1),
        (2, 202, 2),
        (2, 203, 3),
        # user 4 is not in the test set: counts for coverage only
        (4, 401, 1),
    ]
)
TEST = pd.DataFrame(
    [(1, 102), (1, 104), (2, 201), (2, 203), (3, 301)],
    columns=["user_id", "track_id"],
)


def test_metrics_match_hand_computed_values() -> None:
    metrics = evaluate(RECS, TEST, catalogue_size=14, k=3)
    log3 = math.log2(3)
    # user 3 got no recommendation: zero on every metric, but still averaged in.
    assert metrics.n_users_evaluated == 3
    assert metrics.precision_at_k == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert metrics.recall_at_k == pytest.approx((1 / 2 + 1 + 0) / 3)
    # AP@3: user 1 -> (1/2) / min(3, 2); user 2 -> (1/1 + 2/3) / 2.
    assert metrics.map_at_k == pytest.approx((0.25 + 5 / 6 + 0) / 3)
    ndcg_1 = (1 / log3) / (1 + 1 / log3)
    ndcg_2 = (1 + 1 / 2) / (1 + 1 / log3)
    assert metrics.ndcg_at_k == pytest.approx((ndcg_1 + ndcg_2 + 0) / 3)
    # Tracks at rank <= 3: 101, 102, 103, 201, 202, 203, 401.
    assert metrics.coverage == pytest.approx(7 / 14)
    assert metrics.as_dict()["k"] == 3


def test_perfect_recommendations_score_one() -> None:
    recs = _recs([(1, 10, 1), (1, 11, 2), (2, 20, 1)])
    test = pd.DataFrame([(1, 10), (1, 11), (2, 20)], columns=["user_id", "track_id"])
    metrics = evaluate(recs, test, catalogue_size=3, k=2)
    assert metrics.recall_at_k == pytest.approx(1.0)
    assert metrics.map_at_k == pytest.approx(1.0)
    assert metrics.ndcg_at_k == pytest.approx(1.0)
    # user 2 has one relevant track, so precision@2 is capped at 1/2 for them.
    assert metrics.precision_at_k == pytest.approx((1.0 + 0.5) / 2)
    assert metrics.coverage == pytest.approx(1.0)


def test_empty_test_set_gives_zero_metrics() -> None:
    metrics = evaluate(RECS, TEST.iloc[0:0], catalogue_size=14, k=3)
    assert metrics.n_users_evaluated == 0
    assert metrics.precision_at_k == 0.0
