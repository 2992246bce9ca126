"""The plain steps behind the assets, on tiny frames (no database)."""

from datetime import datetime, timezone

import numpy as np
import pandas as pd

from moovitamix_assets.ml import pipeline
from moovitamix_assets.ml.models import (
    AlsModel,
    AlsParams,
    FallbackModel,
    fit_popularity,
    train_als,
)

NOW = datetime(2026, 11, 20, 2, tzinfo=timezone.utc)


def interactions(pairs: list[tuple[int, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(pairs, columns=["user_id", "track_id"])
    return frame.assign(play_count=1, weight=1.0, last_position=np.arange(len(frame)))


def recommend(model, version, users, tracks, listens, k, batch_users=100_000) -> pd.DataFrame:
    batches = pipeline.recommendation_batches(
        model, version, users, tracks, listens, k, NOW, batch_users=batch_users
    )
    return pd.concat(list(batches), ignore_index=True)


def test_training_half_drops_exactly_the_held_out_pairs() -> None:
    big = 2**62  # ids far past any user x track product: keys must not overflow
    everything = interactions([(1, 10), (1, 11), (2, 10), (2, big), (1, big), (2, 11), (big, 11)])
    holdout = interactions([(1, 11), (2, big), (big, 11)])
    train = pipeline.training_half(everything, holdout)
    # (1, big) and (2, 11) stay: their user and their track are held out, but not as that pair.
    kept = sorted(zip(train["user_id"], train["track_id"], strict=True))
    assert kept == [(1, 10), (1, big), (2, 10), (2, 11)]
    assert pipeline.training_half(everything, holdout.iloc[0:0]) is everything


def test_the_fallback_gives_every_user_k_genre_recommendations() -> None:
    users = pd.DataFrame({"id": [1, 2, 3], "favorite_genres": ["Rock", "Jazz", None]})
    tracks = pd.DataFrame({"id": [10, 11, 12, 13], "genres": ["Rock", "Jazz", "Rock", "Jazz"]})
    listens = interactions([(1, 10), (2, 10), (2, 11), (4, 13), (4, 12)])
    recs = recommend(FallbackModel(), 1, users, tracks, listens, 2)
    assert list(recs.columns) == list(pipeline.RECOMMENDATION_TABLE_COLUMNS)
    assert recs.groupby("user_id").size().to_dict() == {1: 2, 2: 2, 3: 2}
    assert set(recs["source"]) == {"genre_popularity"} and set(recs["model_version"]) == {1}
    assert recs.merge(listens, on=["user_id", "track_id"]).empty
    # Rock fan: the unheard Rock track first.
    assert recs.loc[recs["user_id"] == 1, "track_id"].iloc[0] == 12


def test_removed_tracks_are_never_recommended() -> None:
    users = pd.DataFrame({"id": [1, 2], "favorite_genres": ["Rock", "Rock"]})
    all_tracks = pd.DataFrame({"id": [10, 11, 12, 13], "genres": ["Rock"] * 4})
    active = all_tracks[all_tracks["id"] != 11]
    listens = interactions([(1, 10), (2, 11), (3, 11), (3, 12)])
    model = AlsModel(
        params=AlsParams(factors=1),
        user_ids=np.array([1, 2, 3], dtype=np.int64),
        item_ids=np.array([10, 11, 12, 13], dtype=np.int64),
        user_factors=np.ones((3, 1), dtype=np.float32),
        item_factors=np.array([[1.0], [9.0], [2.0], [0.5]], dtype=np.float32),
    )
    recs = recommend(model, 4, users, active, listens, 2)
    assert 11 not in set(recs["track_id"])
    assert recs.groupby("user_id").size().to_dict() == {1: 2, 2: 2}
    assert recs.loc[recs["user_id"] == 1, "track_id"].tolist() == [12, 13]
    assert set(recs["model_version"]) == {4}
    assert (recs["generated_at"] == pd.Timestamp(NOW)).all()


def test_candidate_pool_keeps_the_most_listened_tracks() -> None:
    model = AlsModel(
        params=AlsParams(factors=1),
        user_ids=np.array([1, 2, 3], dtype=np.int64),
        item_ids=np.array([10, 11, 12], dtype=np.int64),
        user_factors=np.ones((3, 1), dtype=np.float32),
        # Track 10 scores best but only one user listened to it: outside a pool of two.
        item_factors=np.array([[9.0], [2.0], [1.0]], dtype=np.float32),
    )
    listens = interactions([(1, 10), (1, 11), (2, 11), (3, 11), (2, 12), (3, 12)])
    popularity = fit_popularity(listens)
    pooled = pipeline.candidate_pool(model, popularity, size=2)
    assert pooled.item_ids.tolist() == [11, 12]
    assert pooled.recommend(np.array([1]), listens.iloc[0:0], 1)["track_id"].tolist() == [11]
    assert pipeline.candidate_pool(model, popularity, size=3) is model


def test_evaluation_scores_the_same_seeded_sample_of_users_for_every_model() -> None:
    from moovitamix_assets.ml.evaluation import evaluate_on_holdout

    rng = np.random.default_rng(0)
    pairs = [(u, int(t)) for u in range(1, 201) for t in rng.choice(50, size=4, replace=False)]
    everything = interactions(pairs)
    test = everything.groupby("user_id").tail(1)
    train = pipeline.training_half(everything, test)
    recommenders = {"a": fit_popularity(train), "b": fit_popularity(train)}
    full = evaluate_on_holdout(recommenders, train, test, 50, 10)
    sampled = evaluate_on_holdout(recommenders, train, test, 50, 10, max_users=40, seed=3)
    again = evaluate_on_holdout(recommenders, train, test, 50, 10, max_users=40, seed=3)
    assert full["a"].n_users_evaluated == 200
    assert sampled["a"].n_users_evaluated == sampled["b"].n_users_evaluated == 40
    assert sampled["a"] == sampled["b"] == again["a"]


def test_batches_of_users_give_the_same_recommendations_as_one_batch() -> None:
    rng = np.random.default_rng(3)
    users = pd.DataFrame({"id": np.arange(1, 301), "favorite_genres": ["Rock", "Jazz", None] * 100})
    tracks = pd.DataFrame({"id": np.arange(1_000, 1_200), "genres": ["Rock", "Jazz"] * 100})
    pairs = zip(rng.integers(1, 301, 3_000), rng.integers(1_000, 1_200, 3_000), strict=True)
    listens = interactions([(int(u), int(t)) for u, t in pairs])
    listens = listens.drop_duplicates(["user_id", "track_id"])
    listens = listens.sample(frac=1.0, random_state=1)  # histories in no particular order
    # Users 1-20 are unknown to the ALS model: they get the cold-start ranking in every batch.
    als = train_als(listens[listens["user_id"] > 20], AlsParams(factors=4, iterations=2))
    for model in (FallbackModel(), als):
        whole = recommend(model, 1, users, tracks, listens, 5)
        batched = recommend(model, 1, users, tracks, listens, 5, batch_users=7)
        pd.testing.assert_frame_equal(whole, batched)
        assert whole.groupby("user_id").size().eq(5).all() and len(whole) == 1_500
        assert whole.merge(listens, on=["user_id", "track_id"]).empty
