from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from moovitamix_assets.ml import pipeline
from moovitamix_assets.ml.evaluation import evaluate_on_holdout
from moovitamix_assets.ml.models import (
    SOURCE_ALS,
    SOURCE_COLD_START,
    AlsParams,
    fit_popularity,
    known_items_matrix,
    lookup_indices,
    train_als,
)

from .conftest import TEST_PARAMS

K = 10
NOW = datetime(2026, 11, 20, 2, tzinfo=timezone.utc)

# Listeners: 10 -> 3, 20 -> 3, 40 -> 2, 50 -> 2, 30 -> 1, 60 -> 0 (catalogue only).
HISTORY = pd.DataFrame(
    [
        (1, 10),
        (1, 20),
        (2, 10),
        (2, 20),
        (2, 40),
        (3, 10),
        (3, 30),
        (3, 50),
        (4, 50),
        (4, 40),
        (5, 20),
    ],
    columns=["user_id", "track_id"],
).assign(play_count=1, weight=1.0, last_position=0)
TRACKS = pd.DataFrame(
    {
        "id": [10, 20, 30, 40, 50, 60],
        "genres": ["Rock", "Pop", "Rock", "Jazz", "Pop", "Jazz"],
    }
)
USERS = pd.DataFrame({"id": [1, 3, 4, 5], "favorite_genres": ["Jazz", "Pop", "Rock", "Classical"]})


def _lists(recs: pd.DataFrame) -> dict[int, list[int]]:
    ordered = recs.sort_values(["user_id", "rank"])
    return {int(u): list(map(int, g["track_id"])) for u, g in ordered.groupby("user_id")}


def _listened(recs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    return recs.merge(history[["user_id", "track_id"]], on=["user_id", "track_id"])


def test_known_items_matrix_sums_values_in_the_given_id_order() -> None:
    frame = pd.DataFrame({"user_id": [7, 3, 7, 7, 9], "track_id": [50, 50, 20, 50, 20]})
    values = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    matrix = known_items_matrix(frame, np.array([3, 7]), np.array([20, 50]), values)
    # Duplicated (user, track) rows add up; user 9 is not asked for.
    np.testing.assert_allclose(matrix.toarray(), [[0.0, 2.0], [4.0, 9.0]])
    assert known_items_matrix(frame, np.array([7]), np.array([50])).toarray().tolist() == [[2.0]]


def test_popularity_ranks_by_distinct_listeners_and_skips_listened_tracks() -> None:
    model = fit_popularity(HISTORY, TRACKS)
    recs = model.recommend(np.array([1, 5, 4, 6]), HISTORY, k=2)
    assert _lists(recs) == {1: [40, 50], 4: [10, 20], 5: [10, 40], 6: [10, 20]}
    assert recs.loc[recs["user_id"] == 1, "score"].tolist() == [2.0, 2.0]
    assert recs.loc[recs["user_id"] == 1, "rank"].tolist() == [1, 2]


def test_popularity_returns_what_is_left_when_the_catalogue_runs_out() -> None:
    model = fit_popularity(HISTORY, TRACKS)
    recs = model.recommend(np.array([2]), HISTORY, k=10)
    # Track 60 has no listener but is in the catalogue, so it still fills the list.
    assert _lists(recs) == {2: [50, 30, 60]}


def test_genre_popularity_puts_the_favourite_genre_first_then_fills_globally() -> None:
    model = fit_popularity(HISTORY, TRACKS, USERS)
    recs = model.recommend(np.array([1, 3, 4, 5, 6]), HISTORY, k=3)
    assert _lists(recs) == {
        1: [40, 60, 50],  # Jazz first, then the most popular unheard
        3: [20, 40, 60],  # Pop 20 (50 already heard), then global
        4: [10, 30, 20],  # both Rock tracks, then global
        5: [10, 40, 50],  # no Classical track: global popularity
        6: [10, 20, 40],  # unknown user: global popularity
    }


def test_genre_popularity_tolerates_missing_genres() -> None:
    users = pd.concat(
        [USERS, pd.DataFrame({"id": [7], "favorite_genres": [None]})], ignore_index=True
    )
    tracks = TRACKS.assign(genres=[None, "Pop", "Rock", "Jazz", "Pop", "Jazz"])
    model = fit_popularity(HISTORY, tracks, users)
    recs = model.recommend(np.array([4, 7]), HISTORY, k=3)
    # Track 10 lost its genre: user 4 (Rock) gets Rock 30 first, then 10 by global popularity.
    assert _lists(recs) == {4: [30, 10, 20], 7: [10, 20, 40]}


def test_als_beats_both_baselines_on_structured_data(structured) -> None:
    results = evaluate_on_holdout(
        {
            "als": structured.als,
            "popularity": structured.popularity,
            "genre_popularity": structured.genre_popularity,
        },
        structured.train,
        structured.split.test,
        catalogue_size=len(structured.data.tracks),
    )
    als, popularity, genre = (results[n] for n in ("als", "popularity", "genre_popularity"))
    assert als.n_users_evaluated == popularity.n_users_evaluated == len(structured.split.test)
    assert als.precision_at_k >= 1.5 * popularity.precision_at_k
    assert als.precision_at_k > genre.precision_at_k
    assert als.ndcg_at_k > popularity.ndcg_at_k
    assert als.coverage > popularity.coverage


def test_als_recommendations_exclude_history_and_are_exactly_k(structured) -> None:
    model = structured.als
    users = model.user_ids[::7]
    recs = model.recommend(users, structured.train, K, batch_size=50)
    assert _listened(recs, structured.train).empty
    assert recs.groupby("user_id").size().eq(K).all()
    assert set(recs["user_id"]) == set(users.tolist())
    assert recs.groupby("user_id")["rank"].apply(list).map(lambda r: r == list(range(1, 11))).all()
    # Scores fall with rank inside every user's list.
    assert (recs.groupby("user_id")["score"].diff().dropna() <= 0).all()
    # Batching does not change the answer.
    one_batch = model.recommend(users, structured.train, K, batch_size=len(users))
    pd.testing.assert_frame_equal(recs, one_batch)


def _with_heavy_listener(history: pd.DataFrame, user: int, tracks: np.ndarray) -> pd.DataFrame:
    heavy = pd.DataFrame({"user_id": user, "track_id": tracks})
    return pd.concat([history[["user_id", "track_id"]], heavy], ignore_index=True)


def test_als_top_k_is_the_best_scored_unheard_tracks_even_beside_a_long_history(structured):
    model = structured.als
    users = model.user_ids[:40]
    # One listener of half the catalogue in the batch.
    history = _with_heavy_listener(structured.train, users[3], model.item_ids[::2])
    recs = model.recommend(users, history, K)
    scores = model.user_factors[:40] @ model.item_factors.T
    scores[known_items_matrix(history, users, model.item_ids).toarray() > 0] = -np.inf
    best = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    expected = {int(u): model.item_ids[best[i]].tolist() for i, u in enumerate(users)}
    assert _lists(recs) == expected


def test_popularity_lists_are_the_first_unheard_tracks_even_beside_a_long_history(structured):
    model = structured.genre_popularity
    users = np.sort(structured.data.users["id"].to_numpy()[:60])
    heavy = model.item_ids[model.ordering[: len(model.item_ids) // 2]]
    history = _with_heavy_listener(structured.train, users[5], heavy)
    exclude = known_items_matrix(history, users, model.item_ids)
    position = lookup_indices(model.user_ids, users)
    for recommender, ordering_of in (
        (model.global_popularity(), lambda i: model.ordering),
        (model, lambda i: model.genre_ordering(int(model.user_genres[position[i]]))),
    ):
        expected = {}
        for i, user in enumerate(users):
            heard = set(exclude[i].indices)
            expected[int(user)] = [
                int(model.item_ids[j]) for j in ordering_of(i) if j not in heard
            ][:K]
        assert _lists(recommender.recommend(users, history, K)) == expected


def test_users_unknown_to_the_als_model_get_no_recommendation(structured) -> None:
    known = int(structured.als.user_ids[0])
    recs = structured.als.recommend(np.array([-1, known]), structured.train, K)
    assert set(recs["user_id"]) == {known} and len(recs) == K


def test_every_user_gets_exactly_k_unheard_tracks_with_cold_start(structured) -> None:
    data = structured.data
    model = structured.als
    new_users = pd.DataFrame({"id": [1, 2, 3], "favorite_genres": ["Jazz", "Metal", "Rock"]})
    users = pd.concat([data.users, new_users], ignore_index=True)
    # Catalogue tracks nobody has heard: unknown to the model, still recommendable.
    new_track_ids = list(range(1, 13))
    new_tracks = pd.DataFrame({"id": new_track_ids, "genres": "Jazz"})
    tracks = pd.concat([data.tracks, new_tracks], ignore_index=True)
    # A new user with history, and a known user who has heard all but three model tracks.
    heavy_user = int(model.user_ids[0])
    heard = data.interactions.loc[data.interactions["user_id"] == heavy_user, "track_id"]
    unheard = np.setdiff1d(model.item_ids, heard.to_numpy())
    left_for_als = unheard[:3]
    heavy = pd.DataFrame({"user_id": heavy_user, "track_id": unheard[3:]})
    newcomer = pd.DataFrame({"user_id": [2, 2], "track_id": model.item_ids[:2]})
    interactions = pd.concat(
        [data.interactions, heavy.assign(weight=1.0), newcomer.assign(weight=1.0)],
        ignore_index=True,
    )

    batches = pipeline.recommendation_batches(model, 3, users, tracks, interactions, K, NOW)
    recs = pd.concat(list(batches), ignore_index=True)

    assert list(recs.columns) == list(pipeline.RECOMMENDATION_TABLE_COLUMNS)
    assert set(recs["user_id"]) == set(users["id"])
    assert recs.groupby("user_id").size().eq(K).all()
    assert not recs.duplicated(["user_id", "track_id"]).any()
    assert _listened(recs, interactions).empty
    by_user = recs.groupby("user_id")
    assert by_user["rank"].apply(sorted).map(lambda r: r == list(range(1, K + 1))).all()
    sources = by_user["source"].agg(set)
    assert sources.loc[[1, 2, 3]].map(lambda s: s == {SOURCE_COLD_START}).all()
    known = data.users["id"][data.users["id"] != heavy_user]
    assert sources.loc[known].map(lambda s: s == {SOURCE_ALS}).all()
    # The heavy user: the three model tracks left by ALS, topped up by cold start.
    heavy_recs = recs[recs["user_id"] == heavy_user]
    assert heavy_recs["source"].tolist() == [SOURCE_ALS] * 3 + [SOURCE_COLD_START] * 7
    assert set(heavy_recs["track_id"][:3]) == set(left_for_als.tolist())
    assert set(heavy_recs["track_id"][3:]) <= set(new_track_ids)
    # New user 1 likes Jazz: the top cold-start tracks are Jazz tracks.
    jazz = set(tracks.loc[tracks["genres"] == "Jazz", "id"])
    assert set(recs.loc[recs["user_id"] == 1, "track_id"]) <= jazz


def test_training_is_deterministic_for_a_seed(structured) -> None:
    again = train_als(structured.train, TEST_PARAMS, num_threads=1)
    np.testing.assert_array_equal(again.user_factors, structured.als.user_factors)
    np.testing.assert_array_equal(again.item_factors, structured.als.item_factors)
    users = again.user_ids[:100]
    pd.testing.assert_frame_equal(
        again.recommend(users, structured.train, K),
        structured.als.recommend(users, structured.train, K),
    )
    other_seed = AlsParams(**{**TEST_PARAMS.as_dict(), "random_state": 8})
    reseeded = train_als(structured.train, other_seed)
    assert not np.array_equal(reseeded.item_factors, structured.als.item_factors)


def test_model_keeps_float32_factors_and_id_maps(structured) -> None:
    model = structured.als
    assert model.user_factors.dtype == np.float32
    assert model.user_factors.shape == (structured.train["user_id"].nunique(), 32)
    assert model.item_factors.shape == (structured.train["track_id"].nunique(), 32)
    assert np.all(np.diff(model.user_ids) > 0)
    assert lookup_indices(model.user_ids, model.user_ids[[5, 2]]).tolist() == [5, 2]
    assert lookup_indices(model.item_ids, np.array([-4])).tolist() == [-1]


@pytest.mark.parametrize(
    "field", [{"factors": 0}, {"alpha": 0.0}, {"iterations": 0}, {"regularization": -1.0}]
)
def test_params_reject_invalid_values(field: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(field))):
        AlsParams(**field)
