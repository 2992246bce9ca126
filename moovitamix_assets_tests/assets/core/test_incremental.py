"""A day's merge writes only what changed, and the first representation migrates in place."""

from __future__ import annotations

import sqlalchemy as sa

from moovitamix_assets.assets.core.merge import merge_listen_events, rebuild_interactions
from moovitamix_assets.resources.database import PostgresResource
from moovitamix_assets_tests.assets.core.raw_tables import core_state, table_rows
from moovitamix_assets_tests.assets.core.test_merge_days import (
    DAY1,
    DAY2,
    RECORDS,
    load_raw,
    merge_day,
)

# The tables that store core's rows, and their keys.
STORED = {
    "core.users": "id",
    "core.tracks": "id",
    "core.listen_pairs": "user_id, track_id",
    "core.listen_histories": "user_id",
}


def row_versions(engine: sa.Engine, table: str) -> dict[tuple, str]:
    """Key -> xmin (the transaction that wrote the row's current version)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT {STORED[table]}, xmin::text FROM {table}")).all()
    return {tuple(r[:-1]): r[-1] for r in rows}


def engine_with_days(postgres_resource: PostgresResource) -> sa.Engine:
    engine = postgres_resource.engine()
    load_raw(engine, DAY1, DAY2)
    return engine


def test_remerging_the_same_day_writes_no_row(postgres_resource: PostgresResource) -> None:
    engine = engine_with_days(postgres_resource)
    merge_day(engine, DAY1)
    merge_day(engine, DAY2)
    before = {table: row_versions(engine, table) for table in STORED}

    merge_day(engine, DAY2)

    assert {table: row_versions(engine, table) for table in STORED} == before


def test_a_new_day_rewrites_only_the_pairs_that_changed(
    postgres_resource: PostgresResource,
) -> None:
    engine = engine_with_days(postgres_resource)
    merge_day(engine, DAY1)
    before = row_versions(engine, "core.listen_pairs")

    result = merge_listen_events(engine, DAY2)

    after = row_versions(engine, "core.listen_pairs")
    rewritten = {k for k in before if after[k] != before[k]}
    counts = result.counts
    assert len(after.keys() - before.keys()) == counts["inserted"] > 0
    assert len(rewritten) == counts["updated"] + counts["inactivated"] + counts["reactivated"]
    # Every pair stays in DAY2 (the active ones) or leaves it: most are not touched at all.
    assert counts["inactivated"] > 0
    assert len(rewritten) < len(before) / 4


def test_a_vanished_pair_keeps_its_last_history(postgres_resource: PostgresResource) -> None:
    engine = engine_with_days(postgres_resource)
    merge_day(engine, DAY1)
    merge_day(engine, DAY2)
    day1 = {h["user_id"]: h for h in RECORDS[("listen_history", DAY1)] if h["user_id"]}
    day2 = {h["user_id"]: h for h in RECORDS[("listen_history", DAY2)] if h["user_id"]}
    with engine.connect() as conn:
        events = conn.execute(sa.text("SELECT * FROM core.listen_events")).all()

    gone = [e for e in events if not e.is_active]
    assert gone, "the scenario must make pairs leave"
    for event in events:
        source = (day2 if event.is_active else day1)[event.user_id]
        assert event.list_length == len(source["items"])
        assert event.source_updated_at.replace(tzinfo=None).isoformat() == source["updated_at"]
        assert event.last_seen == (DAY2 if event.is_active else DAY1)


# The first representation: core.listen_events as a table with every column stored, and a
# generated duration_seconds on core.tracks.
_FIRST_REPRESENTATION = (
    "CREATE TABLE core.listen_events_v1 AS SELECT * FROM core.listen_events",
    "DROP VIEW core.listen_events",
    "DROP TABLE core.listen_pairs, core.listen_histories",
    "ALTER TABLE core.listen_events_v1 RENAME TO listen_events",
    "ALTER TABLE core.listen_events ALTER COLUMN last_seen SET NOT NULL",
    "ALTER TABLE core.listen_events ALTER COLUMN list_length SET NOT NULL",
    "ALTER TABLE core.listen_events ADD CONSTRAINT listen_events_pkey "
    "PRIMARY KEY (user_id, track_id)",
    "CREATE INDEX listen_events_track_id_idx ON core.listen_events (track_id, user_id)",
    "CREATE INDEX listen_events_orphans_idx ON core.listen_events (user_id, track_id) "
    "WHERE NOT (user_known AND track_known)",
    "ALTER TABLE core.tracks DROP COLUMN duration_seconds",
    "ALTER TABLE core.tracks ADD COLUMN duration_seconds integer GENERATED ALWAYS AS ("
    "CASE WHEN duration ~ '^[0-9]{1,4}:[0-5][0-9]$' THEN split_part(duration, ':', 1)::integer"
    " * 60 + split_part(duration, ':', 2)::integer END) STORED",
)


def test_the_first_representation_migrates_and_merges_on(
    postgres_resource: PostgresResource,
) -> None:
    engine = engine_with_days(postgres_resource)
    merge_day(engine, DAY1)
    merge_day(engine, DAY2)
    expected = core_state(engine)
    with engine.begin() as conn:
        seconds = dict(conn.execute(sa.text("SELECT id, duration_seconds FROM core.tracks")).all())
        conn.execute(sa.text("DROP SCHEMA core CASCADE"))
    merge_day(engine, DAY1)
    with engine.begin() as conn:
        for statement in _FIRST_REPRESENTATION:
            conn.execute(sa.text(statement))

    merge_day(engine, DAY2)

    state = core_state(engine)
    for table in ("core.users", "core.listen_events", "core.user_track_interactions"):
        assert state[table] == expected[table], table
    assert table_rows(engine, "core.listen_pairs"), "the table moved to its new name"
    with engine.connect() as conn:
        migrated = dict(conn.execute(sa.text("SELECT id, duration_seconds FROM core.tracks")).all())
    assert migrated == seconds
    # And the next day's merge compares every user once more, then skips the unchanged ones.
    assert merge_listen_events(engine, DAY2).counts["changed_histories"] == 0
    assert rebuild_interactions(engine).rows_total == len(expected["core.user_track_interactions"])
