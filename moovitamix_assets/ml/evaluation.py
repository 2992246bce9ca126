"""Ranking metrics of top-k recommendations against held-out interactions, vectorised."""

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from moovitamix_assets.ml.models import (
    AlsModel,
    Recommender,
    isin_ids,
    recommend_excluding_history,
    unique_ids,
)

DEFAULT_K = 10
METRIC_NAMES: tuple[str, ...] = (
    "precision_at_k",
    "recall_at_k",
    "map_at_k",
    "ndcg_at_k",
    "coverage",
)


# Columns of ``Metrics.per_user``: the per-user values the means are taken over.
PER_USER_COLUMNS: tuple[str, ...] = ("precision_at_k", "recall_at_k", "map_at_k", "ndcg_at_k")


@dataclass(frozen=True)
class Metrics:
    """Mean per-user ranking metrics at ``k`` over the users with held-out interactions.

    ``per_user`` keeps each evaluated user's values (indexed by user id, sorted), so two models
    scored on the same users can be compared pairwise (``ml.significance``).
    """

    k: int
    precision_at_k: float
    recall_at_k: float
    map_at_k: float
    ndcg_at_k: float
    coverage: float
    n_users_evaluated: int
    hits: int = 0
    per_user: pd.DataFrame | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "k": self.k,
            **{name: float(getattr(self, name)) for name in METRIC_NAMES},
            "n_users_evaluated": self.n_users_evaluated,
            "hits": self.hits,
        }

    def per_user_values(self, metric: str) -> np.ndarray:
        """Each evaluated user's ``metric`` (a ``PER_USER_COLUMNS`` name), in user id order."""
        if metric not in PER_USER_COLUMNS:
            raise ValueError(f"{metric!r} has no per-user value; one of {PER_USER_COLUMNS}")
        if self.per_user is None:
            return np.zeros(0, dtype=np.float64)
        return self.per_user[metric].to_numpy(dtype=np.float64)


def evaluate(
    recs: pd.DataFrame, test: pd.DataFrame, catalogue_size: int, k: int = DEFAULT_K
) -> Metrics:
    """Score recommendations ``[user_id, track_id, rank]`` against ``test[user_id, track_id]``.

    Every user with a held-out interaction counts, with zero hits when they got no
    recommendation. Per user u with relevant set T_u and hits at ranks r <= k:
    precision = hits / k; recall = hits / |T_u|; AP = sum over hits of precision@r divided by
    min(k, |T_u|); NDCG = sum 1 / log2(r + 1) over hits divided by the ideal DCG of
    min(k, |T_u|) hits. Coverage is the number of distinct recommended tracks (rank <= k, all
    users) over ``catalogue_size``.

    Args:
        recs: Recommendations; rows with ``rank > k`` are ignored.
        test: Held-out interactions.
        catalogue_size: Number of tracks that could have been recommended.
        k: Cut-off.

    Returns:
        The metrics, averaged over the test users.

    Raises:
        ValueError: If ``k`` or ``catalogue_size`` is not positive.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if catalogue_size < 1:
        raise ValueError(f"catalogue_size must be >= 1, got {catalogue_size}")
    top = recs.loc[recs["rank"].to_numpy() <= k, ["user_id", "track_id", "rank"]]
    relevant = test[["user_id", "track_id"]].drop_duplicates()
    n_relevant = relevant.groupby("user_id").size()
    n_users = len(n_relevant)
    coverage = top["track_id"].nunique() / catalogue_size
    if n_users == 0:
        return Metrics(
            k,
            0.0,
            0.0,
            0.0,
            0.0,
            coverage,
            0,
            per_user=pd.DataFrame({name: np.zeros(0) for name in PER_USER_COLUMNS}),
        )

    hits = top.merge(relevant, on=["user_id", "track_id"], how="inner")
    hits = hits.sort_values(["user_id", "rank"], kind="stable")
    rank = hits["rank"].to_numpy(dtype=np.float64)
    # The i-th hit of a user (1-based) at rank r contributes precision@r = i / r to AP.
    hit_number = hits.groupby("user_id").cumcount().to_numpy() + 1
    hits = hits.assign(
        gain=1.0 / np.log2(rank + 1.0),
        precision_at_hit=hit_number / rank,
    )
    per_user = hits.groupby("user_id").agg(
        n_hits=("track_id", "size"),
        dcg=("gain", "sum"),
        ap_sum=("precision_at_hit", "sum"),
    )
    per_user = per_user.reindex(n_relevant.index, fill_value=0)
    size = n_relevant.to_numpy(dtype=np.float64)
    n_hits = per_user["n_hits"].to_numpy(dtype=np.float64)
    ideal_hits = np.minimum(size, k).astype(np.int64)
    discount_cumsum = np.cumsum(1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64)))
    ideal_dcg = discount_cumsum[ideal_hits - 1]

    per_user_values = pd.DataFrame(
        {
            "precision_at_k": n_hits / k,
            "recall_at_k": n_hits / size,
            "map_at_k": per_user["ap_sum"].to_numpy() / ideal_hits,
            "ndcg_at_k": per_user["dcg"].to_numpy() / ideal_dcg,
        },
        index=n_relevant.index,
    )
    means = per_user_values.mean()
    return Metrics(
        k=k,
        precision_at_k=float(means["precision_at_k"]),
        recall_at_k=float(means["recall_at_k"]),
        map_at_k=float(means["map_at_k"]),
        ndcg_at_k=float(means["ndcg_at_k"]),
        coverage=float(coverage),
        n_users_evaluated=n_users,
        hits=int(n_hits.sum()),
        per_user=per_user_values,
    )


def evaluate_on_holdout(
    recommenders: Mapping[str, Recommender],
    train: pd.DataFrame,
    test: pd.DataFrame,
    catalogue_size: int,
    k: int = DEFAULT_K,
    *,
    max_users: int | None = None,
    seed: int = 0,
) -> dict[str, Metrics]:
    """Evaluate several recommenders on the same held-out users, excluding their train history.

    Users an ALS model does not know get no recommendation from it and count as misses, so every
    recommender is scored on exactly the same users and relevant tracks.

    ``max_users`` caps the evaluated users with a seeded sample, the same for every recommender:
    scoring a user costs a pass over the catalogue, so evaluating every user of a large base
    would grow with users x tracks while the metrics settle after a few thousand users.
    """
    test_users = unique_ids(test["user_id"].to_numpy(dtype=np.int64))
    if max_users is not None and len(test_users) > max_users:
        rng = np.random.default_rng(seed)
        test_users = np.sort(rng.choice(test_users, size=max_users, replace=False))
        test = test.loc[isin_ids(test["user_id"].to_numpy(), test_users)]
    results = {}
    for name, recommender in recommenders.items():
        users = test_users
        if isinstance(recommender, AlsModel):
            users = users[recommender.user_index(users) >= 0]
        recs = recommend_excluding_history(recommender, users, train, k)
        results[name] = evaluate(recs, test, catalogue_size, k)
    return results
