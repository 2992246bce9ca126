"""Two consecutive days of the API stand-in merged into core: exact counts, idempotency, order."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from moovitamix_api.config import DataConfig
from moovitamix_api.data import Dataset
from moovitamix_assets.defs.core.assets import (
    MergeResult,
    interaction_figures,
    merge_listen_events,
    merge_tracks,
    merge_users,
)
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets_tests.defs.core.raw_tables import core_state, load_raw_snapshot

DAY1 = date(2026, 11, 1)
DAY2 = DAY1 + timedelta(days=1)
ENDPOINTS = ("users", "tracks", "listen_history")
USER_FIELDS = ("first_name", "last_name", "email", "gender", "favorite_genres")
MERGES: tuple[Callable[[sa.Engine, date], MergeResult], ...] = (
    merge_users,
    merge_tracks,
    merge_listen_events,
)

# High churn and change rates so that one day has inserts, updates and removals on every table.
DATASET = Dataset(
    DataConfig(records=300, seed=7, user_churn=0.05, track_churn=0.05, change_rate=0.1)
)
RECORDS = {(ep, d): DATASET.records(ep, d) for ep in ENDPOINTS for d in (DAY1, DAY2)}


def by_id(day: date, endpoint: str) -> dict[int, dict[str, Any]]:
    return {r["id"]: r for r in RECORDS[(endpoint, day)]}


def expected_pairs(day: date) -> dict[tuple[int, int], tuple[int, int]]:
    """(user, track) -> (1-based position of the last listen, occurrences), computed in Python."""
    pairs: dict[tuple[int, int], tuple[int, int]] = {}
    for history in RECORDS[("listen_history", day)]:
        if history["user_id"] is None or history["items"] is None:
            continue
        for position, track in enumerate(history["items"], start=1):
            key = (history["user_id"], track)
            pairs[key] = (position, pairs.get(key, (0, 0))[1] + 1)
    return pairs


def load_raw(engine: sa.Engine, *days: date) -> None:
    for day in days:
        for endpoint in ENDPOINTS:
            load_raw_snapshot(engine, endpoint, day, RECORDS[(endpoint, day)])


def merge_day(engine: sa.Engine, day: date) -> dict[str, MergeResult]:
    tables = ("users", "tracks", "listen_events")
    results = {t: merge(engine, day) for t, merge in zip(tables, MERGES, strict=True)}
    results["user_track_interactions"] = interaction_figures(engine)
    return results


def changes(result: MergeResult) -> dict[str, int]:
    return {k: result.counts[k] for k in ("inserted", "updated", "inactivated", "reactivated")}


@pytest.fixture
def engine(postgres_resource: PostgresResource) -> sa.Engine:
    engine = postgres_resource.engine()
    load_raw(engine, DAY1, DAY2)
    return engine


def test_two_days_reflect_each_snapshot_exactly(engine: sa.Engine) -> None:
    day1 = merge_day(engine, DAY1)
    users1, users2 = by_id(DAY1, "users"), by_id(DAY2, "users")
    tracks1, tracks2 = by_id(DAY1, "tracks"), by_id(DAY2, "tracks")
    pairs1, pairs2 = expected_pairs(DAY1), expected_pairs(DAY2)
    assert changes(day1["users"]) == {
        "inserted": len(users1),
        "updated": 0,
        "inactivated": 0,
        "reactivated": 0,
    }
    assert day1["tracks"].counts["inserted"] == len(tracks1)
    assert day1["listen_events"].counts["inserted"] == len(pairs1)
    assert day1["listen_events"].rows_total == len(pairs1)

    day2 = merge_day(engine, DAY2)

    def changed(old: dict[int, dict], new: dict[int, dict]) -> int:
        return sum(1 for i in old.keys() & new.keys() if old[i] != new[i])

    expected_users = {
        "inserted": len(users2.keys() - users1.keys()),
        "updated": changed(users1, users2),
        "inactivated": len(users1.keys() - users2.keys()),
        "reactivated": 0,
    }
    # The scenario must exercise every kind of change, or the equality below proves little.
    assert min(expected_users["inserted"], expected_users["updated"]) > 0
    assert expected_users["inactivated"] > 0
    assert changes(day2["users"]) == expected_users
    assert changes(day2["tracks"]) == {
        "inserted": len(tracks2.keys() - tracks1.keys()),
        "updated": changed(tracks1, tracks2),
        "inactivated": len(tracks1.keys() - tracks2.keys()),
        "reactivated": 0,
    }
    assert day2["listen_events"].counts["inserted"] == len(pairs2.keys() - pairs1.keys())
    assert day2["listen_events"].counts["inactivated"] == len(pairs1.keys() - pairs2.keys())

    with engine.connect() as conn:
        users = {r.id: r for r in conn.execute(sa.text("SELECT * FROM core.users"))}
        events = {
            (r.user_id, r.track_id): r
            for r in conn.execute(sa.text("SELECT * FROM core.listen_events"))
        }
        interactions = conn.execute(
            sa.text("SELECT * FROM core.user_track_interactions ORDER BY user_id, track_id")
        ).all()
    assert users.keys() == users1.keys() | users2.keys()
    for uid, row in users.items():
        source = users2.get(uid) or users1[uid]
        assert tuple(getattr(row, f) for f in USER_FIELDS) == tuple(source[f] for f in USER_FIELDS)
        assert row.is_active == (uid in users2)
        assert row.first_seen == (DAY1 if uid in users1 else DAY2)
        assert row.last_seen == (DAY2 if uid in users2 else DAY1)

    active = {k: (r.position, r.play_count) for k, r in events.items() if r.is_active}
    assert active == pairs2
    assert events.keys() == pairs1.keys() | pairs2.keys()
    known_tracks = tracks1.keys() | tracks2.keys()
    assert {k for k, r in events.items() if not r.track_known} == {
        k for k in events if k[1] not in known_tracks
    }
    assert any(not r.track_known for r in events.values()), "the stand-in serves orphans"

    # Interactions: the active, non-orphan pairs, with the columns the model layer reads.
    expected_keys = sorted(k for k in pairs2 if k[1] in known_tracks and k[0] in users)
    assert [(r.user_id, r.track_id) for r in interactions] == expected_keys
    for row in interactions:
        event = events[(row.user_id, row.track_id)]
        assert (row.play_count, row.last_position) == (event.play_count, event.position)
        recency = 0.5 + 0.5 * event.position / event.list_length
        assert row.weight == pytest.approx((1 + math.log(event.play_count)) * recency)
        assert row.track_active == (row.track_id in tracks2)


def test_listen_events_count_equals_distinct_pairs_of_the_snapshot(engine: sa.Engine) -> None:
    result = merge_day(engine, DAY1)["listen_events"]
    histories = [
        h for h in RECORDS[("listen_history", DAY1)] if h["user_id"] is not None and h["items"]
    ]
    entries = sum(len(h["items"]) for h in histories)
    distinct = len({(h["user_id"], t) for h in histories for t in h["items"]})
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM core.listen_events")).scalar_one()
    assert rows == distinct == result.counts["snapshot_pairs"]
    assert result.counts["list_entries"] == entries
    assert result.counts["repeated_entries"] == entries - distinct


@pytest.mark.parametrize("again", [DAY2, DAY1], ids=["latest-day", "older-day"])
def test_rerunning_a_merged_day_changes_nothing(engine: sa.Engine, again: date) -> None:
    merge_day(engine, DAY1)
    merge_day(engine, DAY2)
    before = core_state(engine)

    rerun = merge_day(engine, again)

    assert core_state(engine) == before
    for table in ("users", "tracks", "listen_events"):
        assert changes(rerun[table]) == dict.fromkeys(
            ("inserted", "updated", "inactivated", "reactivated"), 0
        )


def test_merge_is_order_independent(engine: sa.Engine) -> None:
    merge_day(engine, DAY1)
    merge_day(engine, DAY2)
    in_order = core_state(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA core CASCADE"))

    late = merge_day(engine, DAY2)
    backfill = merge_day(engine, DAY1)

    assert core_state(engine) == in_order
    # The older day only adds what it alone held, and never marks anything (in)active.
    assert backfill["users"].counts["inactivated"] == 0
    assert backfill["users"].counts["inserted"] == len(
        by_id(DAY1, "users").keys() - by_id(DAY2, "users").keys()
    )
    assert late["users"].counts["is_newest_snapshot"] == 1
    assert backfill["users"].counts["is_newest_snapshot"] == 0
