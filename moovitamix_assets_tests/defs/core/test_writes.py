"""A day's merge writes only what changed, and the first representation migrates in place."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from moovitamix_assets.defs.core.assets import (
    merge_listen_events,
    merge_tracks,
    merge_users,
    rebuild_interactions,
)
from moovitamix_assets.resources.database import PostgresResource
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
    "core.interaction_pairs": "user_id, track_id",
    "core.interaction_users": "user_id",
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


def test_a_new_day_rewrites_only_the_interactions_that_changed(
    postgres_resource: PostgresResource,
) -> None:
    engine = engine_with_days(postgres_resource)
    merge_day(engine, DAY1)
    before = row_versions(engine, "core.interaction_pairs")
    users_before = row_versions(engine, "core.interaction_users")
    for merge in (merge_users, merge_tracks, merge_listen_events):
        merge(engine, DAY2)
    with engine.connect() as conn:
        pending = {
            tuple(r)
            for r in conn.execute(
                sa.text("SELECT user_id, track_id FROM core.interaction_pending_pairs")
            )
        }
        pending_users = set(
            conn.execute(sa.text("SELECT user_id FROM core.interaction_pending_users")).scalars()
        )
    # Until the build, readers see the previous day's interactions.
    assert {r[7] for r in table_rows(engine, INTERACTIONS)} == {DAY1}

    result = rebuild_interactions(engine)

    counts = result.counts
    assert counts["full_build"] == 0, "the scenario must take the incremental way"
    after = row_versions(engine, "core.interaction_pairs")
    new, gone = after.keys() - before.keys(), before.keys() - after.keys()
    rewritten = {k for k in before.keys() & after.keys() if after[k] != before[k]}
    assert (len(new), len(gone)) == (counts["inserted"], counts["deleted"])
    assert new and gone and rewritten
    assert new | gone <= pending
    # A rewritten pair is a pending one or a row of a track that left the catalogue (DAY1 was
    # the first day: every inactive track left on DAY2); a list that grew rewrites its user's
    # list length only, not the user's pairs.
    with engine.connect() as conn:
        left = set(
            conn.execute(sa.text("SELECT id FROM core.tracks WHERE NOT is_active")).scalars()
        )
    assert all(k in pending or k[1] in left for k in rewritten)
    assert len(rewritten) <= counts["updated"] + counts["track_active_updated"]
    assert counts["track_active_updated"] > 0
    users_after = row_versions(engine, "core.interaction_users")
    written_users = {k for k in users_after if users_after[k] != users_before.get(k)}
    written_users |= users_before.keys() - users_after.keys()
    assert {k[0] for k in written_users} <= pending_users
    assert len(written_users) == counts["list_lengths_written"] > 0
    assert before.keys() - gone - rewritten, "rows of unchanged users stay untouched"
    # And the result is exactly the definition.
    assert interactions(engine) == from_scratch(engine)
    with engine.connect() as conn:
        still_pending = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM core.interaction_pending_pairs)"
                " + (SELECT count(*) FROM core.interaction_pending_users)"
            )
        ).scalar_one()
    assert still_pending == 0


def test_interactions_equal_the_definition_after_days_in_and_out_of_order(
    postgres_resource: PostgresResource,
) -> None:
    engine = engine_with_days(postgres_resource)
    day3 = DAY2 + timedelta(days=1)
    for endpoint in ENDPOINTS:
        load_raw_snapshot(engine, endpoint, day3, DATASET.records(endpoint, day3))
    builds = []
    states = []
    for day in (DAY1, day3, DAY2, DAY2, DAY1, day3):
        builds.append(merge_day(engine, day)["user_track_interactions"].counts["full_build"])
        assert interactions(engine) == from_scratch(engine), day
        states.append(core_state(engine))
    assert builds[0] == 1 and 0 in builds[1:], "the later builds must be incremental"
    # Once every day is merged, re-merging any of them changes nothing...
    assert states[2:] == [states[2]] * 4
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA core CASCADE"))
    in_order = [merge_day(engine, d) for d in (DAY1, DAY2, day3)]
    # ... and merging them in order gives the same state.
    assert core_state(engine) == states[-1]
    assert (
        rebuild_interactions(engine, full=True).rows_total
        == in_order[-1]["user_track_interactions"].rows_total
    )
    assert core_state(engine) == states[-1]


def _first_representation_interactions(engine: sa.Engine) -> None:
    """Turn core.user_track_interactions back into the table every column was stored in."""
    with engine.begin() as conn:
        for statement in (
            "CREATE TABLE core.uti_v1 AS SELECT * FROM core.user_track_interactions",
            "DROP VIEW core.user_track_interactions",
            "DROP TABLE core.interaction_pairs, core.interaction_users, core.interactions_state,"
            " core.interaction_pending_pairs, core.interaction_pending_users,"
            " core.interaction_inactive_tracks",
            "ALTER TABLE core.uti_v1 RENAME TO user_track_interactions",
            "ALTER TABLE core.user_track_interactions ADD CONSTRAINT"
            " user_track_interactions_pkey PRIMARY KEY (user_id, track_id)",
            "CREATE INDEX user_track_interactions_track_id_idx"
            " ON core.user_track_interactions (track_id)",
            "ALTER TABLE core.user_track_interactions SET (autovacuum_enabled = false)",
        ):
            conn.execute(sa.text(statement))


def test_an_interactions_table_migrates_and_stays_readable(
    postgres_resource: PostgresResource,
) -> None:
    engine = engine_with_days(postgres_resource)
    merge_day(engine, DAY1)
    merge_day(engine, DAY2)
    expected = core_state(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA core CASCADE"))
    merge_day(engine, DAY1)
    day1 = interactions(engine)
    _first_representation_interactions(engine)

    merge_users(engine, DAY2)  # the first merge with this code migrates

    with engine.connect() as conn:
        kind = conn.execute(
            sa.text(
                "SELECT relkind FROM pg_class WHERE oid = 'core.user_track_interactions'::regclass"
            )
        ).scalar_one()
    assert kind == "v"
    assert interactions(engine) == day1, "the stored rows stay readable until the next build"
    merge_tracks(engine, DAY2)
    merge_listen_events(engine, DAY2)
    assert rebuild_interactions(engine).counts["full_build"] == 1
    assert core_state(engine) == expected
    assert rebuild_interactions(engine).counts["full_build"] == 0


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
    _first_representation_interactions(engine)
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
