"""Re-merging writes nothing, a new day writes only the pairs that changed, vanished pairs keep
their history, interactions match their definition, and the previous representation migrates."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from moovitamix_assets.defs.core.assets import merge_listen_events
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets_tests.defs.core.raw_tables import (
    core_state,
    load_raw_snapshot,
    table_rows,
)
from moovitamix_assets_tests.defs.core.test_merge_days import (
    DATASET,
    DAY1,
    DAY2,
    ENDPOINTS,
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


def listen_pairs_indexes(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'listen_pairs'")
        ).all()
    return {name: definition for name, definition in rows}


def test_a_first_load_builds_the_by_track_index_after_the_merge(
    postgres_resource: PostgresResource,
) -> None:
    engine = engine_with_days(postgres_resource)
    merge_day(engine, DAY1)  # into an empty table: the index is dropped, then built again
    first = listen_pairs_indexes(engine)
    merge_day(engine, DAY2)  # a daily merge keeps it

    assert listen_pairs_indexes(engine) == first
    assert first["listen_events_track_id_idx"].endswith("(track_id, user_id)")
    assert {"listen_pairs_pkey", "listen_events_orphans_idx"} <= first.keys()
    with engine.connect() as conn:
        valid = conn.execute(
            sa.text(
                "SELECT indisvalid FROM pg_index"
                " WHERE indexrelid = 'core.listen_events_track_id_idx'::regclass"
            )
        ).scalar_one()
    assert valid


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
    assert counts["inactivated"] > 0
    # The active pairs of users whose history did not change are not even compared.
    assert 0 < counts["changed_histories"] < len(RECORDS[("listen_history", DAY2)])
    assert len(rewritten) < len(before)


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


# What core.user_track_interactions is by definition (docs/data-model.md), from core.listen_events.
FROM_SCRATCH = """
    SELECT e.user_id, e.track_id, e.play_count,
           (1 + ln(e.play_count)) * (0.5 + 0.5 * e.position::float8 / e.list_length) AS weight,
           e.position AS last_position, e.list_length, e.first_seen, e.last_seen,
           k.is_active AS track_active
    FROM core.listen_events e JOIN core.tracks k ON k.id = e.track_id
    WHERE e.is_active AND e.user_known AND e.track_known
    ORDER BY 1, 2
"""


def interactions(engine: sa.Engine) -> list[tuple]:
    """The view's rows, weights rounded (the view and FROM_SCRATCH compute them alike)."""
    return [(*r[:3], round(r[3], 9), *r[4:]) for r in table_rows(engine, INTERACTIONS)]


def from_scratch(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(FROM_SCRATCH)).all()
    return [(*r[:3], round(r[3], 9), *r[4:]) for r in rows]


INTERACTIONS = "core.user_track_interactions"


def test_interactions_equal_the_definition_after_days_in_and_out_of_order(
    postgres_resource: PostgresResource,
) -> None:
    engine = engine_with_days(postgres_resource)
    day3 = DAY2 + timedelta(days=1)
    for endpoint in ENDPOINTS:
        load_raw_snapshot(engine, endpoint, day3, DATASET.records(endpoint, day3))
    states = []
    for day in (DAY1, day3, DAY2, DAY2, DAY1, day3):
        merge_day(engine, day)
        assert interactions(engine) == from_scratch(engine), day
        states.append(core_state(engine))
    # Once every day is merged, re-merging any of them changes nothing...
    assert states[2:] == [states[2]] * 4
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA core CASCADE"))
    for day in (DAY1, DAY2, day3):
        merge_day(engine, day)
    # ... and merging them in order gives the same state.
    assert core_state(engine) == states[-1]


# The previous representation: core.listen_events and core.user_track_interactions were views
# over storage tables (same index and key names) with bookkeeping tables beside them.
_PREVIOUS_REPRESENTATION = (
    "CREATE TABLE core.pairs_v2 AS SELECT user_id, track_id, position, play_count, list_length,"
    " source_created_at, source_updated_at, first_seen, last_seen, is_active, user_known,"
    " track_known FROM core.listen_events",
    "DROP VIEW core.user_track_interactions, core.listen_events",
    "DROP TABLE core.listen_pairs",
    "ALTER TABLE core.pairs_v2 RENAME TO listen_pairs",
    "ALTER TABLE core.listen_pairs ADD CONSTRAINT listen_pairs_pkey"
    " PRIMARY KEY (user_id, track_id)",
    "CREATE INDEX listen_events_track_id_idx ON core.listen_pairs (track_id, user_id)",
    "CREATE VIEW core.listen_events AS SELECT * FROM core.listen_pairs",
    "CREATE TABLE core.interaction_pairs (user_id bigint, track_id bigint,"
    " CONSTRAINT user_track_interactions_pkey PRIMARY KEY (user_id, track_id))",
    "CREATE VIEW core.user_track_interactions AS SELECT * FROM core.interaction_pairs",
    "DROP TABLE core.listen_histories",
    "CREATE TABLE core.listen_histories (user_id bigint PRIMARY KEY, list_length integer)",
    "CREATE TABLE core.interactions_state (id boolean PRIMARY KEY)",
)


def test_the_previous_representation_migrates_and_merges_on(
    postgres_resource: PostgresResource,
) -> None:
    engine = engine_with_days(postgres_resource)
    merge_day(engine, DAY1)
    merge_day(engine, DAY2)
    expected = core_state(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA core CASCADE"))
    merge_day(engine, DAY1)
    with engine.begin() as conn:
        for statement in _PREVIOUS_REPRESENTATION:
            conn.execute(sa.text(statement))

    merge_day(engine, DAY2)  # the first merge with this code migrates

    assert core_state(engine) == expected
    with engine.connect() as conn:
        left = conn.execute(
            sa.text(
                "SELECT relname, relkind FROM pg_class c JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE nspname = 'core' AND relkind IN ('r', 'v')"
                " ORDER BY 1"
            )
        ).all()
        indexes = conn.execute(
            sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'listen_pairs'")
        ).scalars()
        assert {"listen_events_track_id_idx", "listen_events_orphans_idx"} <= set(indexes)
    assert [tuple(r) for r in left] == [
        ("listen_events", "v"),
        ("listen_histories", "r"),
        ("listen_pairs", "r"),
        ("merge_log", "r"),
        ("tracks", "r"),
        ("user_track_interactions", "v"),
        ("users", "r"),
    ]
