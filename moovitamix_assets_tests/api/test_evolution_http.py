"""Determinism and day-to-day evolution as a client sees them over HTTP."""

from __future__ import annotations

import collections

import pytest
import requests

from moovitamix_api import Dataset

pytestmark = pytest.mark.http

DAY = "2026-04-09"


def read_all(server, endpoint: str) -> list[dict]:
    items: list[dict] = []
    page = 1
    while True:
        body = requests.get(
            f"{server.base_url}/{endpoint}", params={"page": page, "size": 100}, timeout=10
        ).json()
        items += body["items"]
        if page >= body["pages"]:
            return items
        page += 1


def test_same_seed_and_day_serve_identical_bytes_and_another_seed_differs(api_server):
    first, again = (
        api_server(records=400, seed=3, day=DAY),
        api_server(records=400, seed=3, day=DAY),
    )
    other = api_server(records=400, seed=4, day=DAY)
    for endpoint in ("users", "tracks", "listen_history"):
        url = f"/{endpoint}?page=2&size=100"
        body = requests.get(first.base_url + url, timeout=10).content
        assert body == requests.get(again.base_url + url, timeout=10).content
        assert body != requests.get(other.base_url + url, timeout=10).content


def test_next_day_adds_removes_changes_and_extends_histories(api_server):
    server = api_server(
        records=1500, seed=42, day=DAY, user_churn=0.02, change_rate=0.05, duplicate_rate=0
    )
    before = {e: read_all(server, e) for e in ("users", "listen_history")}
    server.set_day("2026-04-10")
    after = {e: read_all(server, e) for e in ("users", "listen_history")}
    old = {u["id"]: u for u in before["users"]}
    new = {u["id"]: u for u in after["users"]}
    assert len(old) == len(new) == 1500
    assert 0 < len(new.keys() - old.keys()) == len(old.keys() - new.keys()) < 100
    changed = [i for i in old.keys() & new.keys() if old[i] != new[i]]
    assert changed and all(new[i]["updated_at"].startswith("2026-04-10") for i in changed)
    histories_before = {h["user_id"]: h["items"] for h in before["listen_history"]}
    extended = 0
    for history in after["listen_history"]:
        previous = histories_before.get(history["user_id"])
        if history["user_id"] is None or previous is None or history["items"] is None:
            continue
        assert history["items"][: len(previous)] == previous
        extended += len(history["items"]) > len(previous)
    assert extended > 0


def test_listens_favour_each_users_genre_over_http(api_server):
    server = api_server(records=1000, seed=42, day=DAY, mean_listens=20)
    genre_of_track = {t["id"]: t["genres"] for t in read_all(server, "tracks")}
    # The listening genre: the declared favorite_genres matches it for only some users.
    dataset = Dataset(server.config.data)
    favourite = {u["id"]: dataset.favourite_genre(u["id"]) for u in read_all(server, "users")}
    hits = listens = 0
    popularity: collections.Counter[int] = collections.Counter()
    for history in read_all(server, "listen_history"):
        for track_id in history["items"] or []:
            if history["user_id"] in favourite and track_id in genre_of_track:
                listens += 1
                popularity[track_id] += 1
                hits += genre_of_track[track_id] == favourite[history["user_id"]]
    assert listens > 10_000
    assert hits / listens > 0.6
    assert sum(c for _, c in popularity.most_common(100)) / listens > 0.3
