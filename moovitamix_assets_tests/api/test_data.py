"""The generator: determinism, day evolution, listening with and without taste (no HTTP)."""

from __future__ import annotations

import collections
import datetime as dt

import numpy as np
import pytest

from moovitamix_api import DataConfig, Dataset
from moovitamix_api.config import TASTES
from moovitamix_api.data import _Bijection, zipf_ranks
from moovitamix_api.words import GENRES

DAY = dt.date(2026, 4, 9)


def by_id(records, key="id"):
    return {r[key]: r for r in records if r[key] is not None}


def test_same_seed_and_day_give_the_same_data_and_another_seed_differs():
    first = Dataset(DataConfig(records=500, seed=1, day=DAY))
    again = Dataset(DataConfig(records=500, seed=1, day=DAY))
    other = Dataset(DataConfig(records=500, seed=2, day=DAY))
    for endpoint in ("users", "tracks", "listen_history"):
        assert first.records(endpoint) == again.records(endpoint)
        assert first.records(endpoint) != other.records(endpoint)
    ids = {r["id"] for r in first.records("users")}
    assert len(ids & {r["id"] for r in other.records("users")}) < 50


def test_a_day_later_records_appear_change_disappear_and_keep_their_ids():
    config = DataConfig(
        records=3000, day=DAY, user_churn=0.02, track_churn=0.01, change_rate=0.05, duplicate_rate=0
    )
    today, tomorrow = (
        Dataset(config),
        Dataset(DataConfig(**{**vars(config), "day": DAY + dt.timedelta(1)})),
    )
    for endpoint in ("users", "tracks"):
        before, after = by_id(today.records(endpoint)), by_id(tomorrow.records(endpoint))
        assert len(before) == len(after) == 3000  # churn is balanced: total never moves
        new, removed = after.keys() - before.keys(), before.keys() - after.keys()
        assert len(new) == len(removed) > 0.5 * 3000 * (0.02 if endpoint == "users" else 0.01)
        assert all(after[i]["created_at"].startswith("2026-04-10") for i in new)
        kept = before.keys() & after.keys()
        changed = [i for i in kept if before[i] != after[i]]
        assert 0.02 * 3000 < len(changed) < 0.1 * 3000
        for i in changed:
            assert after[i]["updated_at"].startswith("2026-04-10")
            assert after[i]["created_at"] == before[i]["created_at"]
            differing = {k for k in before[i] if before[i][k] != after[i][k]} - {"updated_at"}
            assert differing and "id" not in differing
        assert len(kept) - len(changed) > 0.8 * 3000  # most records are untouched


def test_histories_grow_by_appending():
    today = Dataset(DataConfig(records=2000, day=DAY))
    later = Dataset(DataConfig(records=2000, day=DAY + dt.timedelta(3)))
    before = by_id(today.records("listen_history"), "user_id")
    after = by_id(later.records("listen_history"), "user_id")
    grown = 0
    for user_id in before.keys() & after.keys():
        old, new = before[user_id]["items"], after[user_id]["items"]
        if old is None or new is None:
            continue
        assert new[: len(old)] == old
        if len(new) > len(old):
            grown += 1
            assert after[user_id]["updated_at"] > before[user_id]["updated_at"]
    assert grown > 100


def test_ids_are_unique_per_endpoint_and_bijective():
    dataset = Dataset(DataConfig(records=20_000, day=DAY, duplicate_rate=0))
    ids = np.array([r["id"] for r in dataset.iter_records("tracks")])
    assert len(np.unique(ids)) == 20_000 and ids.min() >= 1
    bijection = _Bijection(18, 3, "t")
    x = np.arange(1 << 18, dtype=np.uint64)
    y = bijection.forward(x)
    assert len(np.unique(y)) == 1 << 18
    assert np.array_equal(bijection.inverse(y), x)


def listening_figures(dataset: Dataset) -> dict[str, float]:
    """Shares of listens in the user's listening genre and in the top decile of tracks, orphans,
    and the share of users whose declared genre is their listening genre."""
    tracks = by_id(dataset.records("tracks"))
    users = by_id(dataset.records("users"))
    in_genre = listens = orphans = declared = listeners = 0
    counts: collections.Counter[int] = collections.Counter()
    for history in dataset.records("listen_history"):
        if history["user_id"] is None or not history["items"]:
            continue
        genre = dataset.favourite_genre(history["user_id"])
        listeners += 1
        declared += users[history["user_id"]]["favorite_genres"] == genre
        for track_id in history["items"]:
            listens += 1
            counts[track_id] += 1
            if track_id in tracks:
                in_genre += tracks[track_id]["genres"] == genre
            else:
                orphans += 1
                # An orphan is still the id of a real (removed) track.
                in_genre += dataset.track_genre(track_id) == genre
    top_decile = sum(c for _, c in counts.most_common(len(tracks) // 10))
    return {
        "listens": listens,
        "in_genre": in_genre / listens,
        "orphans": orphans / listens,
        "top_decile": top_decile / listens,
        "declared": declared / listeners,
    }


def test_listens_follow_the_listening_genre_and_skewed_popularity():
    dataset = Dataset(DataConfig(records=4000, day=DAY, mean_listens=20, duplicate_rate=0))
    figures = listening_figures(dataset)
    assert figures["listens"] > 0.8 * 4000 * 20
    assert figures["in_genre"] > 0.6  # chance would be ~1/17
    assert figures["orphans"] < 0.15  # removed tracks leave a few orphans, not many
    # Zipf-like: the top 10% of tracks get far more than 10% of the listens.
    assert figures["top_decile"] > 0.4


@pytest.mark.parametrize("share", [0.6, 0.3, 1.0])
def test_the_declared_genre_is_the_listening_genre_for_about_declared_genre_share(share):
    dataset = Dataset(DataConfig(records=4000, day=DAY, declared_genre_share=share))
    users = dataset.records("users")
    declared = [u["favorite_genres"] == dataset.favourite_genre(u["id"]) for u in users]
    # 4,000 users: the binomial standard deviation is under 0.008.
    assert abs(np.mean(declared) - share) < 0.04
    # The others declared some other genre, drawn over all of them, not one fixed genre.
    others = collections.Counter(
        u["favorite_genres"] for u, d in zip(users, declared, strict=True) if not d
    )
    assert share == 1.0 or len(others) > 10


def test_scenes_give_users_of_one_genre_different_favourite_tracks():
    def top_tracks_per_user(scenes: int) -> float:
        dataset = Dataset(DataConfig(records=4000, day=DAY, mean_listens=30, taste_scenes=scenes))
        # Users of the most common listening genre: how many distinct first-ranked tracks.
        by_genre: dict[str, list[int]] = collections.defaultdict(list)
        for history in dataset.records("listen_history"):
            if history["user_id"] is None or not history["items"]:
                continue
            genre = dataset.favourite_genre(history["user_id"])
            top = collections.Counter(
                t for t in history["items"] if dataset.track_genre(t) == genre
            ).most_common(1)
            if top:
                by_genre[genre].append(top[0][0])
        biggest = max(by_genre.values(), key=len)
        return len(set(biggest)) / len(biggest)

    assert top_tracks_per_user(8) > top_tracks_per_user(1)


def test_no_taste_gives_uniform_listening_without_genre_preference():
    dataset = Dataset(
        DataConfig(records=4000, day=DAY, mean_listens=20, duplicate_rate=0, **TASTES["none"])
    )
    figures = listening_figures(dataset)
    assert figures["listens"] > 0.8 * 4000 * 20
    # A track's genre is its slot modulo 17: uniform tracks are 1/17 in any genre.
    assert abs(figures["in_genre"] - 1 / 17) < 0.01
    # About 20 listens per track: the top decile holds little more than its 10 %.
    assert figures["top_decile"] < 0.16
    counts = collections.Counter(
        t for h in dataset.records("listen_history") for t in (h["items"] or [])
    )
    assert max(counts.values()) < 60  # Zipf would give the top track thousands


def test_the_default_data_has_the_odd_but_valid_records_of_the_contract():
    dataset = Dataset(DataConfig(records=20_000, day=DAY))
    users = dataset.records("users")
    assert DataConfig().duplicate_rate > 0
    repeated = (
        len(users) - len({u["id"] for u in users}) + len(users) - len({u["email"] for u in users})
    )
    assert 0 < repeated < 0.01 * len(users)
    histories = dataset.records("listen_history")
    assert any(h["user_id"] is None for h in histories)
    assert any(h["items"] is None for h in histories)


@pytest.mark.parametrize(
    "field, value",
    [
        ("declared_genre_share", -0.1),
        ("declared_genre_share", 1.5),
        ("taste_scenes", 0),
        ("zipf_exponent", -1.0),
        ("favourite_share", 1.1),
    ],
)
def test_out_of_range_knobs_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        DataConfig(**{field: value})


def test_lookups_agree_with_pages():
    dataset = Dataset(DataConfig(records=300, day=DAY, listen_null_rate=0))
    users = dataset.page("users", 2, 100)[0]
    histories = dataset.page("listen_history", 2, 100)[0]
    for user, history in zip(users, histories, strict=True):
        assert dataset.user(user["id"]) == user
        assert dataset.listen_history(user["id"]) == history
        assert dataset.user_listens(user["id"]) == history["items"]
        assert dataset.favourite_genre(user["id"]) in GENRES
    track = dataset.page("tracks", 3, 100)[0][5]
    assert dataset.track(track["id"]) == track
    assert dataset.track_genre(track["id"]) == track["genres"]
    ranked = dataset.genre_track_ids(track["genres"])
    assert track["id"] in ranked
    assert all(dataset.track(i)["genres"] == track["genres"] for i in ranked)
    assert dataset.user(123_456_789) is None


def test_a_million_records_are_paged_without_generating_them():
    dataset = Dataset(DataConfig(records=1_000_000, day=DAY, mean_listens=50))
    items, total = dataset.page("users", 9_999, 100)
    assert total == 1_000_000 and len(items) == 100
    assert dataset.page("tracks", 10_001, 100) == ([], 1_000_000)
    histories, _ = dataset.page("listen_history", 5_000, 100)
    mean = np.mean([len(h["items"] or []) for h in histories])
    assert 20 < mean < 100


def test_mean_listens_is_configurable():
    for mean in (5, 50):
        dataset = Dataset(DataConfig(records=3000, day=DAY, mean_listens=mean))
        lengths = [len(h["items"] or []) for h in dataset.iter_records("listen_history")]
        assert 0.8 * mean < np.mean(lengths) < 1.2 * mean


def test_duplicates_and_nulls_are_injected_on_demand():
    clean = Dataset(DataConfig(records=2000, day=DAY, listen_null_rate=0, duplicate_rate=0))
    assert all(h["user_id"] and h["items"] is not None for h in clean.records("listen_history"))
    dirty = Dataset(DataConfig(records=2000, day=DAY, duplicate_rate=0.05, listen_null_rate=0.05))
    users = dirty.records("users")
    duplicated_ids = len(users) - len({u["id"] for u in users})
    duplicated_emails = len(users) - len({u["email"] for u in users})
    assert duplicated_ids > 10 and duplicated_emails > 10
    assert len({u["email"] for u in clean.records("users")}) == 2000
    histories = dirty.records("listen_history")
    assert sum(h["user_id"] is None for h in histories) > 40
    assert sum(h["items"] is None for h in histories) > 40
    # Tracks have no email: a duplicate there repeats the id only.
    tracks = dirty.records("tracks")
    assert len(tracks) == 2000
    assert len(tracks) - len({t["id"] for t in tracks}) > 10


def test_zipf_ranks_stay_in_range_and_are_skewed():
    u = np.random.default_rng(0).random(100_000)
    ranks = zipf_ranks(u, 1000, 1.0)
    assert ranks.min() == 0 and ranks.max() < 1000
    assert (ranks < 10).mean() > 0.25
    steeper = zipf_ranks(u, 1000, 1.5)
    assert (steeper < 10).mean() > (ranks < 10).mean()


def test_days_outside_the_id_horizon_are_refused():
    with pytest.raises(ValueError):
        Dataset(DataConfig(records=10, day=dt.date(2019, 1, 1))).page("users", 1, 10)
