"""Hand-made snapshots: duplicates, shared e-mails, orphans and odd values load and are counted."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from moovitamix_assets.defs.core.assets import (
    interaction_figures,
    merge_listen_events,
    merge_tracks,
    merge_users,
)
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets_tests.defs.core.raw_tables import load_raw_snapshot, table_rows

DAY = date(2026, 11, 10)
N = 150  # one duplicate in 151 rows stays under the 1% tolerance of the unique-key audit


def user(uid: int, **overrides: Any) -> dict[str, Any]:
    record = {
        "id": uid,
        "first_name": f"First{uid}",
        "last_name": f"Last{uid}",
        "email": f"user{uid}@example.org",
        "gender": "Female",
        "favorite_genres": "Jazz",
        "created_at": "2026-01-01T00:00:00.000001",
        "updated_at": "2026-02-01T00:00:00.000001",
    }
    return record | overrides


def track(tid: int, **overrides: Any) -> dict[str, Any]:
    record = {
        "id": tid,
        "name": f"song {tid}",
        "artist": "Artist",
        "songwriters": "Writer",
        "duration": "03:30",
        "genres": "land",
        "album": "album",
        "created_at": "2026-01-01T00:00:00.000001",
        "updated_at": "2026-02-01T00:00:00.000001",
    }
    return record | overrides


def history(uid: int | None, items: list[int] | None, updated: str = "2026-03-01T00:00:00") -> dict:
    return {
        "user_id": uid,
        "items": items,
        "created_at": "2026-01-01T00:00:00",
        "updated_at": updated,
    }


@pytest.fixture
def engine(postgres_resource: PostgresResource) -> sa.Engine:
    return postgres_resource.engine()


def test_duplicates_shared_emails_and_odd_values_are_kept_and_counted(engine: sa.Engine) -> None:
    users = [user(i) for i in range(1, N + 1)]
    users[1] = user(2, email="user1@example.org")  # shares user 1's e-mail
    users[2] = user(3, updated_at="2025-12-01T00:00:00")  # updated before created
    users[3] = user(4, favorite_genres="Polka", gender="Robot")  # outside the vocabularies
    # Id 5 twice: the later updated_at wins whatever the row order.
    users.insert(4, user(5, first_name="Newer", updated_at="2026-03-01T00:00:00"))
    load_raw_snapshot(engine, "users", DAY, users)

    result = merge_users(engine, DAY)

    assert result.rows_total == N
    assert result.counts["duplicates_resolved"] == 1
    assert result.counts["duplicate_emails"] == 2
    assert result.counts["timestamps_out_of_order"] == 1
    assert result.counts["unknown_genre"] == 1
    assert result.counts["unknown_gender"] == 1
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.text("SELECT * FROM core.users"))}
    assert rows[5].first_name == "Newer"
    assert rows[2].email == rows[1].email == "user1@example.org"
    assert rows[4].favorite_genres == "Polka"
    assert rows[3].updated_at < rows[3].created_at


def test_duplicate_resolution_does_not_depend_on_row_order(engine: sa.Engine) -> None:
    # Same updated_at: the tie is broken on the values, never on the physical order.
    twins = [user(7, first_name="Ann"), user(7, first_name="Bob")]
    winners = []
    for order in (twins, twins[::-1]):
        load_raw_snapshot(engine, "users", DAY, [user(i) for i in range(8, 8 + N)] + order)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS core CASCADE"))
        merge_users(engine, DAY)
        with engine.connect() as conn:
            winners.append(
                conn.execute(sa.text("SELECT first_name FROM core.users WHERE id = 7")).scalar_one()
            )
    assert winners[0] == winners[1]


def test_orphan_pairs_are_kept_flagged_and_resolved_later(engine: sa.Engine) -> None:
    load_raw_snapshot(engine, "users", DAY, [user(i) for i in range(1, N + 1)])
    load_raw_snapshot(engine, "tracks", DAY, [track(i) for i in range(100, 100 + N)])
    histories = [history(i, [100 + i % 10]) for i in range(1, N + 1)]
    histories[0] = history(1, [100, 101, 100, 999])  # 999: unknown track; 100 played twice
    histories.append(history(777, [101]))  # unknown user
    histories.append(history(None, [102]))  # no user id: cannot be keyed, counted
    histories.append(history(2, None, updated="2026-01-15T00:00:00"))  # older duplicate of user 2
    load_raw_snapshot(engine, "listen_history", DAY, histories)
    merge_users(engine, DAY)
    merge_tracks(engine, DAY)

    result = merge_listen_events(engine, DAY)

    assert result.counts["orphan_track_pairs"] == 1
    assert result.counts["orphan_user_pairs"] == 1
    assert result.counts["null_user_records"] == 1
    assert result.counts["duplicates_resolved"] == 1
    assert result.counts["repeated_entries"] == 1
    with engine.connect() as conn:
        events = {
            (r.user_id, r.track_id): r
            for r in conn.execute(sa.text("SELECT * FROM core.listen_events"))
        }
    assert len(events) == N + 3  # user 1 has 3 distinct tracks, user 777 one
    assert (events[(1, 100)].position, events[(1, 100)].play_count) == (3, 2)
    assert not events[(1, 999)].track_known and events[(1, 999)].user_known
    assert not events[(777, 101)].user_known and events[(777, 101)].track_known
    assert events[(2, 102)].is_active  # the newer of user 2's two records won
    interactions = interaction_figures(engine)
    assert interactions.rows_total == N + 1
    assert interactions.counts["orphan_pairs_excluded"] == 2

    # A later snapshot lists the missing track: the reference becomes known.
    later = DAY + timedelta(days=1)
    load_raw_snapshot(engine, "tracks", later, [track(i) for i in [*range(100, 100 + N), 999]])
    load_raw_snapshot(engine, "listen_history", later, histories)
    merge_tracks(engine, later)
    assert merge_listen_events(engine, later).counts["references_resolved"] == 1
    with engine.connect() as conn:
        known = conn.execute(
            sa.text("SELECT track_known FROM core.listen_events WHERE track_id = 999")
        ).scalar_one()
    assert known


def test_record_absent_then_back_is_reactivated(engine: sa.Engine) -> None:
    days = [DAY + timedelta(days=i) for i in range(3)]
    everyone = [user(i) for i in range(1, N + 1)]
    load_raw_snapshot(engine, "users", days[0], everyone)
    load_raw_snapshot(engine, "users", days[1], everyone[1:])
    load_raw_snapshot(engine, "users", days[2], everyone)

    counts = [merge_users(engine, d).counts for d in days]

    assert (counts[1]["inactivated"], counts[2]["reactivated"]) == (1, 1)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM core.users WHERE id = 1")).one()
    assert (row.first_seen, row.last_seen, row.is_active) == (days[0], days[2], True)
    before = table_rows(engine, "core.users")
    merge_users(engine, days[1])  # the day it was absent, merged again: nothing changes
    assert table_rows(engine, "core.users") == before


def test_duration_seconds_is_derived(engine: sa.Engine) -> None:
    tracks = [track(i) for i in range(1, N + 1)]
    tracks[0] = track(1, duration="33:51")
    tracks[1] = track(2, duration="00:00")
    load_raw_snapshot(engine, "tracks", DAY, tracks)
    result = merge_tracks(engine, DAY)
    assert result.counts["zero_duration"] == 1
    with engine.connect() as conn:
        seconds = dict(conn.execute(sa.text("SELECT id, duration_seconds FROM core.tracks")).all())
    assert (seconds[1], seconds[2], seconds[3]) == (33 * 60 + 51, 0, 210)
