"""Ranking metrics of top-k recommendations against held-out interactions, vectorised."""

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from moovitamix_assets.ml.models import Recommender, isin_ids, unique_ids

DEFAULT_K = 10
# Columns of ``Metrics.per_user``: the per-user values the means are taken over.
PER_USER_COLUMNS: tuple[str, ...] = ("precision_at_k", "recall_at_k", "map_at_k", "ndcg_at_k")
METRIC_NAMES: tuple[str, ...] = (*PER_USER_COLUMNS, "coverage")


@dataclass(frozen=True)
class Metrics:
    """Mean ranking metrics at ``k`` over the users with held-out interactions.

    ``per_user`` (indexed by sorted user id) lets two models scored on the same users be compared
    pairwise (``ml.significance``).
    """

    k: int
    precision_at_k: float
    recall_at_k: float
    map_at_k: float
    ndcg_at_k: float
    coverage: float
    n_users_evaluated: int
    hits: int
    per_user: pd.DataFrame = field(compare=False, repr=False)

    def as_dict(self) -> dict[str, float | int]:
        return {name: value for name, value in vars(self).items() if name != "per_user"}

    def per_user_values(self, metric: str) -> np.ndarray:
        """Each evaluated user's ``metric`` (a ``PER_USER_COLUMNS`` name), in user id order."""
        if metric not in PER_USER_COLUMNS:
            raise ValueError(f"{metric!r} has no per-user value; one of {PER_USER_COLUMNS}")
        return self.per_user[metric].to_numpy(dtype=np.float64)


def evaluate(
    recs: pd.DataFrame, test: pd.DataFrame, catalogue_size: int, k: int = DEFAULT_K
) -> Metrics:
    """Score recommendations ``[user_id, track_id, rank]`` against ``test[user_id, track_id]``.

    Every test user counts (zero hits without recommendations). Per user with relevant set T and
    hits at ranks r <= k: precision = hits / k, recall = hits / |T|, AP = sum of precision@r over
    hits / min(k, |T|), NDCG = sum of 1 / log2(r + 1) over hits / the ideal DCG of min(k, |T|)
    hits. Coverage: distinct tracks recommended at rank <= k over ``catalogue_size``.
    """
    top = recs.loc[recs["rank"].to_numpy() <= k, ["user_id", "track_id", "rank"]]
    relevant = test[["user_id", "track_id"]].drop_duplicates()
    size = relevant.groupby("user_id").size()
    hits = top.merge(relevant).sort_values(["user_id", "rank"], kind="stable")
    rank = hits["rank"].to_numpy(dtype=np.float64)
    # The i-th hit of a user (1-based) at rank r contributes precision@r = i / r to AP.
    hit_number = hits.groupby("user_id").cumcount().to_numpy() + 1
    sums = (
        pd.DataFrame({"hits": 1.0, "dcg": 1.0 / np.log2(rank + 1.0), "ap": hit_number / rank})
        .groupby(hits["user_id"].to_numpy())
        .sum()
        .reindex(size.index, fill_value=0.0)
    )
    ideal_hits = np.minimum(size, k)
    ideal_dcg = np.cumsum(1.0 / np.log2(np.arange(2.0, k + 2)))[ideal_hits - 1]
    per_user_values = pd.DataFrame(
        {
            "precision_at_k": sums["hits"] / k,
            "recall_at_k": sums["hits"] / size,
            "map_at_k": sums["ap"] / ideal_hits,
            "ndcg_at_k": sums["dcg"] / ideal_dcg,
        }
    )
    means = per_user_values.mean().fillna(0.0)  # no test user: zero
    return Metrics(
        k=k,
        **{name: float(means[name]) for name in PER_USER_COLUMNS},
        coverage=top["track_id"].nunique() / catalogue_size,
        n_users_evaluated=len(size),
        hits=int(sums["hits"].sum()),
        per_user=per_user_values,
    )


def evaluate_on_holdout(
    recommenders: Mapping[str, Recommender],
    train: pd.DataFrame,
    test: pd.DataFrame,
    catalogue_size: int,
    k: int = DEFAULT_K,
    max_users: int | None = None,
    seed: int = 0,
) -> dict[str, Metrics]:
    """Evaluate recommenders on the same held-out users, excluding their train history.

    Users an ALS model does not know count as its misses. ``max_users`` caps the users with one
    seeded sample for all: metrics settle after a few thousand users, cost grows with each.
    """
    test_users = unique_ids(test["user_id"].to_numpy(dtype=np.int64))
    if max_users is not None and len(test_users) > max_users:
        rng = np.random.default_rng(seed)
        test_users = np.sort(rng.choice(test_users, size=max_users, replace=False))
        test = test.loc[isin_ids(test["user_id"].to_numpy(), test_users)]
    return {
        name: evaluate(recommender.recommend(test_users, train, k), test, catalogue_size, k)
        for name, recommender in recommenders.items()
    }
