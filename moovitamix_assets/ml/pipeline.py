"""Plain typed steps between the ML library and the assets: split, train, evaluate, recommend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Final

import numpy as np
import pandas as pd

from moovitamix_assets.ml import RECOMMENDATION_COLUMNS
from moovitamix_assets.ml.evaluation import Metrics, evaluate_on_holdout
from moovitamix_assets.ml.models import (
    SOURCE_ALS,
    SOURCE_FALLBACK,
    AlsModel,
    AlsParams,
    FallbackModel,
    PopularityModel,
    Recommender,
    ServingModel,
    fit_popularity,
    isin_ids,
    lookup_indices,
    train_als,
    unique_ids,
)
from moovitamix_assets.ml.significance import Interval, Lift, bootstrap_mean, paired_bootstrap_lift

# Names of the recommenders scored side by side on one holdout.
CANDIDATE: Final = "candidate"
SERVING: Final = "serving"
PRODUCTION: Final = "production"
FALLBACK: Final = "fallback"
# Global popularity: a reference figure only, never served.
POPULARITY: Final = "popularity"
RECOMMENDATION_TABLE_COLUMNS: Final = (
    *RECOMMENDATION_COLUMNS,
    "source",
    "model_version",
    "generated_at",
)


# Serving and evaluation score only the most-listened tracks, and evaluation a seeded sample of
# the held-out users, so that both stay linear in the data (see candidate_pool).
DEFAULT_CANDIDATE_POOL = 20_000
DEFAULT_EVALUATION_USERS = 20_000
# Users recommended for at once: memory follows a batch (10 rows a user), not the user base.
DEFAULT_BATCH_USERS = 100_000


def training_half(interactions: pd.DataFrame, holdout: pd.DataFrame) -> pd.DataFrame:
    """The interactions minus the held-out (user, track) pairs: what models may learn from."""
    if len(holdout) == 0:
        return interactions
    # Pairs keyed by their positions among the held-out users and tracks: int64 keys that cannot
    # overflow (positions < 2**31 each), on only the pairs whose user and track are both held
    # out. Complex128 keys of every pair took 380 MB more at 4.5M pairs.
    held_users = unique_ids(holdout["user_id"].to_numpy(dtype=np.int64))
    held_tracks = unique_ids(holdout["track_id"].to_numpy(dtype=np.int64))

    def keys(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        user = lookup_indices(held_users, frame["user_id"].to_numpy(dtype=np.int64))
        track = lookup_indices(held_tracks, frame["track_id"].to_numpy(dtype=np.int64))
        both = (user >= 0) & (track >= 0)
        return both, user[both] * len(held_tracks) + track[both]

    candidates, candidate_keys = keys(interactions)
    held = np.zeros(len(interactions), dtype=bool)
    held[candidates] = isin_ids(candidate_keys, keys(holdout)[1])
    return interactions.loc[~held].reset_index(drop=True)


def train_and_evaluate(
    train: pd.DataFrame,
    test: pd.DataFrame,
    users: pd.DataFrame,
    tracks: pd.DataFrame,
    params: AlsParams,
    k: int,
    load_serving: Callable[[], ServingModel],
    *,
    candidate_pool_size: int = DEFAULT_CANDIDATE_POOL,
    evaluation_users: int = DEFAULT_EVALUATION_USERS,
) -> tuple[AlsModel, dict[str, Metrics]]:
    """Train ALS on ``train``; score it, what serves and global popularity on ``test``.

    ``load_serving`` is called after the fit: a serving ALS model's factors (~190 MB at 1M users)
    and the fit's buffers are never in memory together.
    """
    model = train_als(train, params)
    fallback = fit_popularity(train, tracks, users)
    recommenders = {
        CANDIDATE: candidate_pool(model, fallback, candidate_pool_size),
        SERVING: candidate_pool(load_serving(), fallback, candidate_pool_size),
        POPULARITY: fallback.global_popularity(),
    }
    catalogue_size = max(1, len(fallback.item_ids))
    metrics = evaluate_on_holdout(
        recommenders, train, test, catalogue_size, k, evaluation_users, params.random_state
    )
    return model, metrics


def evaluate_model(
    model: ServingModel,
    train: pd.DataFrame,
    test: pd.DataFrame,
    users: pd.DataFrame,
    tracks: pd.DataFrame,
    k: int,
    *,
    candidate_pool_size: int = DEFAULT_CANDIDATE_POOL,
    evaluation_users: int = DEFAULT_EVALUATION_USERS,
) -> dict[str, Metrics]:
    """Score ``model`` (``production``) and the fallback (``fallback``) on the same holdout.

    The fallback (over the catalogue plus any listened track) also ranks the candidate pool and
    gives the catalogue size, so listeners are counted once per step.
    """
    fallback = fit_popularity(train, tracks, users)
    recommenders = {
        PRODUCTION: candidate_pool(model, fallback, candidate_pool_size),
        FALLBACK: fallback,
    }
    catalogue_size = max(1, len(fallback.item_ids))
    return evaluate_on_holdout(recommenders, train, test, catalogue_size, k, evaluation_users)


@dataclass(frozen=True)
class EvaluationSummary:
    """The serving model's metric with its interval, and its lift over the fallback."""

    metric: str
    interval: Interval
    lift: Lift

    def as_dict(self) -> dict[str, Any]:
        """The figures ``ml.model_evaluations.metrics`` keeps (the decay trigger reads them)."""
        lift = {"lift": self.lift.lift, "low": self.lift.low, "high": self.lift.high}
        return {
            "interval": {"metric": self.metric, **asdict(self.interval)},
            "lift_over_fallback": {**lift, "users": self.lift.n_users},
        }

    def describe(self) -> str:
        i = self.interval
        return (
            f"{self.metric} {i.mean:.4g} [{i.low:.4g}, {i.high:.4g}] at {i.confidence:.0%}, "
            f"lift over the fallback {self.lift.describe()} on {self.lift.n_users} users"
        )


def evaluation_summary(
    metrics: dict[str, Metrics], metric: str, confidence: float
) -> EvaluationSummary:
    """Error bars of ``evaluate_model``'s result: the production metric and its lift."""
    production = metrics[PRODUCTION].per_user_values(metric)
    fallback = metrics[FALLBACK].per_user_values(metric)
    return EvaluationSummary(
        metric=metric,
        interval=bootstrap_mean(production, confidence=confidence),
        lift=paired_bootstrap_lift(production, fallback, confidence=confidence),
    )


def candidate_pool(model: ServingModel, popularity: PopularityModel, size: int) -> Recommender:
    """What ``model`` recommends from: ALS scoring only its ``size`` tracks most listened to in
    ``popularity`` (never one outside its catalogue), or ``popularity`` for the fallback. Serving
    stays linear in users; the tail has too little listening for ALS to rank it above the pool."""
    if isinstance(model, FallbackModel):
        return popularity
    # Most listeners first, ties by track id; tracks nobody listened to never enter the pool.
    listened = popularity.item_ids[popularity.ordering[: np.count_nonzero(popularity.listeners)]]
    keep = isin_ids(model.item_ids, listened[isin_ids(listened, model.item_ids)][:size])
    if keep.all():
        return model
    return replace(model, item_ids=model.item_ids[keep], item_factors=model.item_factors[keep])


def recommendation_batches(
    model: ServingModel,
    model_version: int,
    users: pd.DataFrame,
    tracks: pd.DataFrame,
    interactions: pd.DataFrame,
    k: int,
    generated_at: datetime,
    *,
    candidate_pool_size: int = DEFAULT_CANDIDATE_POOL,
    batch_users: int = DEFAULT_BATCH_USERS,
) -> Iterator[pd.DataFrame]:
    """Exactly ``k`` unheard tracks of ``tracks`` for every user (fewer only when the catalogue
    ends), a frame per batch of users: memory follows one batch, the caller writes each away.

    ALS ranks the users ``model`` knows (``source='als'``), genre-aware popularity the others and
    tops up a list ALS left short (``cold_start``); the fallback ranks everyone by it.
    """
    stamp = pd.DatetimeIndex([pd.Timestamp(generated_at).tz_convert("UTC")])
    # Popularity counts only listens of tracks still in the catalogue, so neither it nor the ALS
    # pool it ranks offers a removed track; all listens still exclude tracks.
    active = isin_ids(interactions["track_id"].to_numpy(), tracks["id"].to_numpy())
    cold_start = fit_popularity(interactions.loc[active, ["user_id", "track_id"]], tracks, users)
    ranker = candidate_pool(model, cold_start, candidate_pool_size)
    source = SOURCE_FALLBACK if ranker is cold_start else SOURCE_ALS
    user_ids = unique_ids(users["id"])
    # Histories sorted by user, so a batch's history is a slice rather than a scan of all.
    listener = interactions["user_id"].to_numpy(dtype=np.int64)
    order = np.argsort(listener, kind="stable")
    listener = listener[order]
    for start in range(0, len(user_ids), batch_users):
        ids = user_ids[start : start + batch_users]
        lo, hi = np.searchsorted(listener, [ids[0], ids[-1] + 1])
        history = interactions.iloc[order[lo:hi]][["user_id", "track_id"]]
        recs = ranker.recommend(ids, history, k)
        recs["source"] = source
        if ranker is not cold_start:
            recs = cold_start.top_up(recs, ids, history, k)
        # The table's columns, without a copy of the frame.
        recs["model_version"] = np.full(len(recs), model_version, dtype=np.int64)
        recs["generated_at"] = stamp.repeat(len(recs))
        yield recs[list(RECOMMENDATION_TABLE_COLUMNS)]
        del recs, history  # before the next batch's, not after it
