"""DDL of the ``core`` schema: current-state tables, normalized listening, interactions, merge log.

Listening rows reference users and tracks by *checked* references (``user_known``,
``track_known``), not foreign keys: the API serves listens of tracks it has removed and of users
it never listed, and issue 3 requires those pairs to be kept and flagged. A foreign key would
reject them. ``core.users`` and ``core.tracks`` never delete a row, so a reference that is known
stays known.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

from moovitamix_assets.constants import CORE_SCHEMA
from moovitamix_assets.resources.database import create_schema_sql, quote_ident

USERS_TABLE: Final = "users"
TRACKS_TABLE: Final = "tracks"
LISTEN_EVENTS_TABLE: Final = "listen_events"
INTERACTIONS_TABLE: Final = "user_track_interactions"
MERGE_LOG_TABLE: Final = "merge_log"

CORE_TABLES: Final = (
    USERS_TABLE,
    TRACKS_TABLE,
    LISTEN_EVENTS_TABLE,
    INTERACTIONS_TABLE,
    MERGE_LOG_TABLE,
)


def core_table(table: str) -> str:
    """Quoted ``core.<table>`` for SQL text."""
    return f"{quote_ident(CORE_SCHEMA)}.{quote_ident(table)}"


# Every daily merge moves last_seen on nearly every row. Half-empty pages let PostgreSQL write the
# new row version on the same page without touching the indexes (a HOT update; no indexed column
# changes), and page pruning reclaims the old version on the next merge: the daily update of all
# rows costs a fraction of a non-HOT one, for twice the table size.
_FILLFACTOR: Final = 50

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
        duration_seconds integer GENERATED ALWAYS AS (
            CASE WHEN duration ~ '^[0-9]{{1,4}}:[0-5][0-9]$'
                 THEN split_part(duration, ':', 1)::integer * 60
                      + split_part(duration, ':', 2)::integer
            END
        ) STORED,
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
    CREATE TABLE IF NOT EXISTS {core_table(LISTEN_EVENTS_TABLE)} (
        user_id bigint NOT NULL,
        track_id bigint NOT NULL,
        position integer NOT NULL,
        play_count integer NOT NULL,
        list_length integer NOT NULL,
        source_created_at timestamptz,
        source_updated_at timestamptz,
        first_seen date NOT NULL,
        last_seen date NOT NULL,
        is_active boolean NOT NULL,
        user_known boolean NOT NULL,
        track_known boolean NOT NULL,
        PRIMARY KEY (user_id, track_id)
    ) WITH (fillfactor = {_FILLFACTOR})
    """,
    # The primary key serves "by user"; this one serves "by track" (item neighbours, popularity).
    f"""
    CREATE INDEX IF NOT EXISTS listen_events_track_id_idx
        ON {core_table(LISTEN_EVENTS_TABLE)} (track_id, user_id)
    """,
    # Orphans are few: a partial index lets the merge re-check only them.
    f"""
    CREATE INDEX IF NOT EXISTS listen_events_orphans_idx
        ON {core_table(LISTEN_EVENTS_TABLE)} (user_id, track_id)
        WHERE NOT (user_known AND track_known)
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
        PRIMARY KEY (user_id, track_id)
    )
    """,
    f"""
    CREATE INDEX IF NOT EXISTS user_track_interactions_track_id_idx
        ON {core_table(INTERACTIONS_TABLE)} (track_id, user_id)
    """,
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
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('core.ddl'))"))
        for ddl in _DDL:
            conn.execute(sa.text(ddl))
