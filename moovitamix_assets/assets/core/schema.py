"""DDL of the ``core`` schema: current-state tables, normalized listening, interactions, merge log.

Listening rows reference users and tracks by *checked* references (``user_known``,
``track_known``), not foreign keys: the API serves listens of tracks it has removed and of users
it never listed, and issue 3 requires those pairs to be kept and flagged. A foreign key would
reject them. ``core.users`` and ``core.tracks`` never delete a row, so a reference that is known
stays known.

``core.listen_events`` is a view over ``core.listen_pairs`` and ``core.listen_histories``: a pair
stores its ``last_seen`` and its history's fields (list length, the record's timestamps) only
once it has left the newest merged snapshot; while it is in it they are NULL, and the view reads
them from the merge log and from the user's current history. Most pairs do not change from one
day to the next, but a stored ``last_seen`` would rewrite all of them every day, and a list that
grows by one track would rewrite every pair of its user. The view derives the columns back, so
readers see one row per pair with every field, as before.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

from moovitamix_assets.constants import CORE_SCHEMA
from moovitamix_assets.resources.database import create_schema_sql, quote_ident

USERS_TABLE: Final = "users"
TRACKS_TABLE: Final = "tracks"
LISTEN_EVENTS_TABLE: Final = "listen_events"
# Storage of the listen_events view, and the newest snapshot's history of each user (the merge
# compares it with the next snapshot to skip the users whose listening did not change).
LISTEN_PAIRS_TABLE: Final = "listen_pairs"
LISTEN_HISTORIES_TABLE: Final = "listen_histories"
INTERACTIONS_TABLE: Final = "user_track_interactions"
MERGE_LOG_TABLE: Final = "merge_log"

CORE_TABLES: Final = (
    USERS_TABLE,
    TRACKS_TABLE,
    LISTEN_PAIRS_TABLE,
    LISTEN_HISTORIES_TABLE,
    INTERACTIONS_TABLE,
    MERGE_LOG_TABLE,
)
CORE_VIEWS: Final = (LISTEN_EVENTS_TABLE,)
# Where the rows (and the primary key) of each core relation live.
STORAGE_TABLES: Final = {LISTEN_EVENTS_TABLE: LISTEN_PAIRS_TABLE}


# duration_seconds of core.tracks from a row aliased ``s``: null unless duration is ``M+:SS``.
DURATION_SECONDS_SQL: Final = (
    "CASE WHEN s.duration ~ '^[0-9]{1,4}:[0-5][0-9]$' "
    "THEN split_part(s.duration, ':', 1)::integer * 60 + split_part(s.duration, ':', 2)::integer "
    "END"
)


def core_table(table: str) -> str:
    """Quoted ``core.<table>`` for SQL text."""
    return f"{quote_ident(CORE_SCHEMA)}.{quote_ident(table)}"


# Every daily merge moves last_seen on nearly every user and track. Half-empty pages let PostgreSQL
# write the new row version on the same page without touching the indexes (a HOT update; no
# indexed column changes), and page pruning reclaims the old version on the next merge: the daily
# update of all rows costs a fraction of a non-HOT one, for twice the table size.
_FILLFACTOR: Final = 50
# Listening pairs are rewritten only when they change (about a fifth of them a day, the users whose
# list grew): a quarter of free space keeps those updates HOT without doubling the table.
_PAIRS_FILLFACTOR: Final = 75

INTERACTIONS_PKEY: Final = "user_track_interactions_pkey"
# The first representation's "by track" index on the interactions. Its readers (the model layer,
# the retraining sensor) scan the table whole, and rebuilding it cost a tenth of the daily merge:
# it is dropped; "by track" queries go to core.listen_events.
INTERACTIONS_TRACK_INDEX: Final = "user_track_interactions_track_id_idx"


def interactions_pkey_ddl() -> str:
    """The interactions table's primary key (the rebuild drops it and adds it back: one sort
    costs a fraction of half a million index insertions)."""
    return (
        f"ALTER TABLE {core_table(INTERACTIONS_TABLE)} ADD CONSTRAINT "
        f"{quote_ident(INTERACTIONS_PKEY)} PRIMARY KEY (user_id, track_id)"
    )


def listen_events_view_sql() -> str:
    """The ``core.listen_events`` view: one row per pair, ``last_seen``/``is_active`` derived."""
    return f"""
    CREATE VIEW {core_table(LISTEN_EVENTS_TABLE)} AS
    SELECT p.user_id, p.track_id, p.position, p.play_count,
           CASE WHEN p.last_seen IS NULL THEN h.list_length ELSE p.list_length END
               AS list_length,
           CASE WHEN p.last_seen IS NULL THEN h.source_created_at ELSE p.source_created_at END
               AS source_created_at,
           CASE WHEN p.last_seen IS NULL THEN h.source_updated_at ELSE p.source_updated_at END
               AS source_updated_at,
           p.first_seen,
           coalesce(
               p.last_seen,
               (SELECT max(m.snapshot_date) FROM {core_table(MERGE_LOG_TABLE)} m
                WHERE m.table_name = {_sql_literal(LISTEN_EVENTS_TABLE)})
           ) AS last_seen,
           p.last_seen IS NULL AS is_active,
           p.user_known, p.track_known
    FROM {core_table(LISTEN_PAIRS_TABLE)} p
    LEFT JOIN {core_table(LISTEN_HISTORIES_TABLE)} h
        ON h.user_id = p.user_id AND p.last_seen IS NULL
    """


def _sql_literal(value: str) -> str:
    # Only for the module's own constant names (never input): a view body cannot take parameters.
    if not value.replace("_", "").isalnum():
        raise ValueError(f"not a plain name: {value!r}")
    return f"'{value}'"


_DDL: Final = (
    create_schema_sql(CORE_SCHEMA),
    f"""
    CREATE TABLE IF NOT EXISTS {core_table(USERS_TABLE)} (
        id bigint PRIMARY KEY,
        first_name text,
        last_name text,
        email text,
        gender text,
        favorite_genres text,
        created_at timestamptz,
        updated_at timestamptz,
        first_seen date NOT NULL,
        last_seen date NOT NULL,
        is_active boolean NOT NULL
    ) WITH (fillfactor = {_FILLFACTOR})
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {core_table(TRACKS_TABLE)} (
        id bigint PRIMARY KEY,
        name text,
        artist text,
        songwriters text,
        duration text,
        -- Derived from duration by the merge (DURATION_SECONDS_SQL), not a generated column:
        -- PostgreSQL recomputes a stored one on every update, even of last_seen alone.
        duration_seconds integer,
        genres text,
        album text,
        created_at timestamptz,
        updated_at timestamptz,
        first_seen date NOT NULL,
        last_seen date NOT NULL,
        is_active boolean NOT NULL
    ) WITH (fillfactor = {_FILLFACTOR})
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {core_table(LISTEN_PAIRS_TABLE)} (
        user_id bigint NOT NULL,
        track_id bigint NOT NULL,
        position integer NOT NULL,
        play_count integer NOT NULL,
        -- These four are NULL while the pair is in the newest merged snapshot (see the view).
        list_length integer,
        source_created_at timestamptz,
        source_updated_at timestamptz,
        first_seen date NOT NULL,
        last_seen date,
        user_known boolean NOT NULL,
        track_known boolean NOT NULL,
        CONSTRAINT listen_pairs_pkey PRIMARY KEY (user_id, track_id)
    ) WITH (fillfactor = {_PAIRS_FILLFACTOR})
    """,
    # The primary key serves "by user"; this one serves "by track" (item neighbours, popularity).
    f"""
    CREATE INDEX IF NOT EXISTS listen_events_track_id_idx
        ON {core_table(LISTEN_PAIRS_TABLE)} (track_id, user_id)
    """,
    # Orphans are few: a partial index lets the merge re-check only them.
    f"""
    CREATE INDEX IF NOT EXISTS listen_events_orphans_idx
        ON {core_table(LISTEN_PAIRS_TABLE)} (user_id, track_id)
        WHERE NOT (user_known AND track_known)
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {core_table(LISTEN_HISTORIES_TABLE)} (
        user_id bigint PRIMARY KEY,
        items bigint[],
        list_length integer,
        source_created_at timestamptz,
        source_updated_at timestamptz
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {core_table(INTERACTIONS_TABLE)} (
        user_id bigint NOT NULL,
        track_id bigint NOT NULL,
        play_count integer NOT NULL,
        weight double precision NOT NULL,
        last_position integer NOT NULL,
        list_length integer NOT NULL,
        first_seen date NOT NULL,
        last_seen date NOT NULL,
        track_active boolean NOT NULL,
        CONSTRAINT {quote_ident(INTERACTIONS_PKEY)} PRIMARY KEY (user_id, track_id)
    )
    """,
    f"DROP INDEX IF EXISTS {quote_ident(CORE_SCHEMA)}.{quote_ident(INTERACTIONS_TRACK_INDEX)}",
    # Rewritten whole by every rebuild, which analyzes it itself: autovacuum has nothing to clean,
    # and a run of it would hold up the next rebuild's TRUNCATE until deadlock_timeout.
    f"ALTER TABLE {core_table(INTERACTIONS_TABLE)} SET (autovacuum_enabled = false)",
    f"""
    CREATE TABLE IF NOT EXISTS {core_table(MERGE_LOG_TABLE)} (
        table_name text NOT NULL,
        snapshot_date date NOT NULL,
        first_merged_at timestamptz NOT NULL DEFAULT now(),
        last_merged_at timestamptz NOT NULL DEFAULT now(),
        merges integer NOT NULL DEFAULT 1,
        PRIMARY KEY (table_name, snapshot_date)
    )
    """,
)


def ensure_core_schema(engine: sa.Engine) -> None:
    """Create the core schema, its tables and indexes when missing (idempotent).

    Runs in its own short transaction, serialised by an advisory lock: two first runs creating the
    same table at once would otherwise fail on the catalogue's unique index.

    Args:
        engine: Engine of the warehouse database.
    """
    with engine.begin() as conn:
        # Every merge calls this: when everything is there, touch nothing. CREATE ... IF NOT
        # EXISTS still locks its table, and would wait for a running autovacuum.
        if _all_exist(conn):
            return
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('core.ddl'))"))
        migrated = _migrate_listen_events_table(conn)
        for ddl in _DDL:
            conn.execute(sa.text(ddl))
        if migrated:
            _move_history_fields(conn)
        if _generated_duration(conn):
            # Keeps the computed values: the column becomes a plain one the merge maintains.
            conn.execute(
                sa.text(
                    f"ALTER TABLE {core_table(TRACKS_TABLE)} "
                    "ALTER COLUMN duration_seconds DROP EXPRESSION"
                )
            )
        # Created once, not replaced on every run: CREATE OR REPLACE would lock out its readers.
        if migrated or not _exists(conn, LISTEN_EVENTS_TABLE):
            conn.execute(sa.text(listen_events_view_sql()))


# Every relation the DDL creates (indexes included): all present means nothing to do.
_RELATIONS: Final = (
    *CORE_TABLES,
    *CORE_VIEWS,
    "listen_pairs_pkey",
    "listen_events_track_id_idx",
    "listen_events_orphans_idx",
    INTERACTIONS_PKEY,
)


def _all_exist(conn: sa.Connection) -> bool:
    kinds = conn.execute(
        sa.text(
            """
            SELECT coalesce(array_agg(c.relkind::text), '{}')
            FROM unnest(CAST(:names AS text[])) AS n(name)
            JOIN pg_class c ON c.oid = to_regclass(n.name)
            """
        ),
        {"names": [f"{CORE_SCHEMA}.{name}" for name in _RELATIONS]},
    ).scalar_one()
    # A listen_events *table* (the first representation) comes without listen_pairs: migrated.
    return len(kinds) == len(_RELATIONS) and not _generated_duration(conn)


def _generated_duration(conn: sa.Connection) -> bool:
    """Whether core.tracks has the first representation's generated duration_seconds."""
    return bool(
        conn.execute(
            sa.text(
                """
                SELECT EXISTS (
                    SELECT 1 FROM pg_attribute
                    WHERE attrelid = to_regclass(:name) AND attname = 'duration_seconds'
                      AND attgenerated <> ''
                )
                """
            ),
            {"name": f"{CORE_SCHEMA}.{TRACKS_TABLE}"},
        ).scalar_one()
    )


def _exists(conn: sa.Connection, relation: str) -> bool:
    return conn.execute(
        sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{CORE_SCHEMA}.{relation}"}
    ).scalar_one()


def _move_history_fields(conn: sa.Connection) -> None:
    """Second half of the migration: the active pairs' history fields move to their user's row.

    The record's items are unknown: NULL items with a list length mark such a row (a served
    record with NULL items has no length), and the next merge compares these users' pairs in full.
    """
    pairs = core_table(LISTEN_PAIRS_TABLE)
    conn.execute(
        sa.text(
            f"""
            INSERT INTO {core_table(LISTEN_HISTORIES_TABLE)} (
                user_id, list_length, source_created_at, source_updated_at
            )
            SELECT DISTINCT ON (user_id) user_id, list_length, source_created_at,
                   source_updated_at
            FROM {pairs} WHERE last_seen IS NULL
            ORDER BY user_id
            """
        )
    )
    conn.execute(
        sa.text(
            f"""
            UPDATE {pairs} SET list_length = NULL, source_created_at = NULL,
                               source_updated_at = NULL
            WHERE last_seen IS NULL
            """
        )
    )


def _migrate_listen_events_table(conn: sa.Connection) -> bool:
    """Turn a ``core.listen_events`` *table* (the first representation) into ``listen_pairs``.

    Returns:
        Whether there was such a table to migrate.
    """
    kind = conn.execute(
        sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:name)"),
        {"name": f"{CORE_SCHEMA}.{LISTEN_EVENTS_TABLE}"},
    ).scalar_one_or_none()
    if kind != "r":
        return False
    old = core_table(LISTEN_EVENTS_TABLE)
    pairs = core_table(LISTEN_PAIRS_TABLE)
    for ddl in (
        f"ALTER TABLE {old} RENAME TO {quote_ident(LISTEN_PAIRS_TABLE)}",
        f"ALTER TABLE {pairs} RENAME CONSTRAINT listen_events_pkey TO listen_pairs_pkey",
        f"ALTER TABLE {pairs} ALTER COLUMN last_seen DROP NOT NULL",
        f"ALTER TABLE {pairs} ALTER COLUMN list_length DROP NOT NULL",
        f"UPDATE {pairs} SET last_seen = NULL WHERE is_active",
        f"ALTER TABLE {pairs} DROP COLUMN is_active",
        f"ALTER TABLE {pairs} SET (fillfactor = {_PAIRS_FILLFACTOR})",
    ):
        conn.execute(sa.text(ddl))
    return True
