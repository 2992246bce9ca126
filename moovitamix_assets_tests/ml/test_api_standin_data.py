"""The model on listening lists from the API stand-in's in-process generator (no HTTP)."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from moovitamix_api.config import DataConfig
from moovitamix_api.data import Dataset
from moovitamix_assets.ml import pipeline
from moovitamix_assets.ml.evaluation import evaluate_on_holdout
from moovitamix_assets.ml.models import SOURCE_ALS, fit_popularity, train_als
from moovitamix_assets.ml.split import time_based_split

from .conftest import TEST_PARAMS


def interactions_from_histories(histories: list[dict]) -> pd.DataFrame:
    """Collapse listening lists into the interactions contract (what the core layer computes)."""
    users, tracks, positions = [], [], []
    for record in histories:
        if record["user_id"] is None or not record["items"]:
            continue
        items = record["items"]
        users.append(np.full(len(items), record["user_id"], dtype=np.int64))
        tracks.append(np.asarray(items, dtype=np.int64))
        positions.append(np.arange(len(items), dtype=np.int64))
    listens = pd.DataFrame(
        {
            "user_id": np.concatenate(users),
            "track_id": np.concatenate(tracks),
            "position": np.concatenate(positions),
        }
    )
    interactions = (
        listens.groupby(["user_id", "track_id"])
        .agg(play_count=("position", "size"), last_position=("position", "max"))
        .reset_index()
    )
    return interactions.assign(weight=interactions["play_count"].astype(np.float64))


@pytest.fixture(scope="module")
def standin():
    config = DataConfig(
        seed=5,
        users=2_000,
        tracks=1_000,
        mean_listens=30,
        day=dt.date(2026, 4, 1),
        listen_null_rate=0.0,
    )
    dataset = Dataset(config)
    users = pd.DataFrame(dataset.records("users"))[["id", "favorite_genres"]]
    tracks = pd.DataFrame(dataset.records("tracks"))[["id", "genres"]]
    interactions = interactions_from_histories(dataset.records("listen_history"))
    return users, tracks, interactions


def test_list_positions_become_play_counts_and_recency() -> None:
    histories = [{"user_id": 9, "items": [5, 7, 5, 8, 5]}, {"user_id": 3, "items": None}]
    interactions = interactions_from_histories(histories).set_index("track_id")
    assert interactions["play_count"].to_dict() == {5: 3, 7: 1, 8: 1}
    assert interactions["last_position"].to_dict() == {5: 4, 7: 1, 8: 3}


def test_als_beats_popularity_on_taste_structured_standin_listening_lists(standin) -> None:
    users, tracks, interactions = standin
    split = time_based_split(interactions)
    model = train_als(split.train, TEST_PARAMS)
    results = evaluate_on_holdout(
        {"als": model, "popularity": fit_popularity(split.train, tracks)},
        split.train,
        split.test,
        catalogue_size=len(tracks),
    )
    assert results["als"].n_users_evaluated > 1_500
    assert results["als"].precision_at_k >= 1.5 * results["popularity"].precision_at_k


def test_every_standin_user_gets_ten_recommendations(standin) -> None:
    users, tracks, interactions = standin
    model = train_als(interactions, TEST_PARAMS)
    now = dt.datetime.now(dt.timezone.utc)
    batches = pipeline.recommendation_batches(model, 1, users, tracks, interactions, 10, now)
    recs = pd.concat(list(batches), ignore_index=True)
    assert set(recs["user_id"]) == set(users["id"])
    assert recs.groupby("user_id").size().eq(10).all()
    assert recs.merge(interactions, on=["user_id", "track_id"]).empty
    # Users with a history are served by ALS; only history-less users are cold starts.
    with_history = set(interactions["user_id"]) & set(users["id"])
    als_users = set(recs.loc[recs["source"] == SOURCE_ALS, "user_id"])
    assert als_users == with_history
