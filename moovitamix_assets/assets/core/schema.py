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

``core.user_track_interactions`` is a view over ``core.interaction_pairs`` and
``core.interaction_users`` in the same spirit. Every interaction is an active pair, so its
``last_seen`` is one date for all rows, kept once in ``core.interactions_state``; and its recency
(position / list length) moves for every pair of a user whose list grows, so the list length is
kept once per user and the view computes the weight from it and two per-pair terms. A build then
writes only the pairs the listen_events merges wrote (``core.interaction_pending_pairs``), the
list lengths of the users whose history changed (``core.interaction_pending_users``) and the rows
of the tracks that left or came back (``core.interaction_inactive_tracks`` remembers which were
inactive).
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

from moovitamix_assets.constants import CORE_SCHEMA
from moovitamix_assets.warehouse.database import create_schema_sql, quote_ident

USERS_TABLE: Final = "users"
TRACKS_TABLE: Final = "tracks"
LISTEN_EVENTS_TABLE: Final = "listen_events"
# Storage of the listen_events view, and the newest snapshot's history of each user (the merge
# compares it with the next snapshot to skip the users whose listening did not change).
LISTEN_PAIRS_TABLE: Final = "listen_pairs"
LISTEN_HISTORIES_TABLE: Final = "listen_histories"
INTERACTIONS_TABLE: Final = "user_track_interactions"
# Storage of the user_track_interactions view (pairs, and each user's list length); the date
# every row's last_seen reads and whether the next build must start over; the pairs and users the
# next build recomputes (recorded by the listen_events merge); the tracks inactive at the last
# build.
INTERACTION_PAIRS_TABLE: Final = "interaction_pairs"
INTERACTION_USERS_TABLE: Final = "interaction_users"
INTERACTIONS_STATE_TABLE: Final = "interactions_state"
PENDING_PAIRS_TABLE: Final = "interaction_pending_pairs"
PENDING_USERS_TABLE: Final = "interaction_pending_users"
INACTIVE_TRACKS_TABLE: Final = "interaction_inactive_tracks"
MERGE_LOG_TABLE: Final = "merge_log"

CORE_TABLES: Final = (
    USERS_TABLE,
    TRACKS_TABLE,
    LISTEN_PAIRS_TABLE,
    LISTEN_HISTORIES_TABLE,
    INTERACTION_PAIRS_TABLE,
    INTERACTION_USERS_TABLE,
    INTERACTIONS_STATE_TABLE,
    PENDING_PAIRS_TABLE,
    PENDING_USERS_TABLE,
    INACTIVE_TRACKS_TABLE,
    MERGE_LOG_TABLE,
)
CORE_VIEWS: Final = (LISTEN_EVENTS_TABLE, INTERACTIONS_TABLE)
# Where the rows (and the primary key) of each core relation live.
STORAGE_TABLES: Final = {
    LISTEN_EVENTS_TABLE: LISTEN_PAIRS_TABLE,
    INTERACTIONS_TABLE: INTERACTION_PAIRS_TABLE,
}


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

# Few stored pairs change in place (a repeat moves a position, a track leaves the catalogue):
# a tenth of free space keeps those updates on their page (HOT: no index touched).
_INTERACTIONS_FILLFACTOR: Final = 90

# A tenth of the users' lists grow every day: their row is updated in place (HOT).
_INTERACTION_USERS_FILLFACTOR: Final = 70

# Confidence of one (user, track) pair: damped play count times recency. ln keeps a track played
# ten times from outweighing ten tracks played once; recency runs from 0.5 (first track of the
# list) to 1.0 (last one), since the lists are append-only in listening order.
WEIGHT_SQL: Final = (
    "(1.0 + ln(e.play_count::double precision))"
    " * (0.5 + 0.5 * e.position::double precision / greatest(e.list_length, 1))"
)
# The same weight split as base + recency / list_length: the two terms are the pair's own (they
# change only when its play count or position does), the list length its user's. The view adds
# them up, so a list that grows rewrites one row of core.interaction_users, not every pair.
WEIGHT_BASE_SQL: Final = "0.5 * (1.0 + ln(e.play_count::double precision))"
WEIGHT_RECENCY_SQL: Final = (
    "0.5 * (1.0 + ln(e.play_count::double precision)) * e.position::double precision"
)

# The key keeps the first representation's name (a migrated table keeps its constraint).
INTERACTIONS_PKEY: Final = "user_track_interactions_pkey"
# The first representation's "by track" index, rebuilt whole every day: dropped.
INTERACTIONS_TRACK_INDEX: Final = "user_track_interactions_track_id_idx"
# Finds the rows of a track that left or came back; maintained only for the rows a day inserts.
INTERACTION_PAIRS_TRACK_INDEX: Final = "interaction_pairs_track_id_idx"


def interactions_index_ddl() -> tuple[str, ...]:
    """The indexes of the interactions' storage (a full build drops them and adds them back: one
    sort costs a fraction of half a million index insertions)."""
    return (
        f"ALTER TABLE {core_table(INTERACTION_PAIRS_TABLE)} ADD CONSTRAINT "
        f"{quote_ident(INTERACTIONS_PKEY)} PRIMARY KEY (user_id, track_id)",
        f"CREATE INDEX {quote_ident(INTERACTION_PAIRS_TRACK_INDEX)} "
        f"ON {core_table(INTERACTION_PAIRS_TABLE)} (track_id)",
    )


def interactions_view_sql() -> str:
    """The ``core.user_track_interactions`` view: stored pairs, their user's list length, the
    weight (``WEIGHT_SQL``, as base + recency / list length), ``last_seen`` from the state.

    A LEFT JOIN on the users' key: a query that reads no user column (``count(*)``, the pairs)
    does not join at all (PostgreSQL removes the join).
    """
    return f"""
    CREATE VIEW {core_table(INTERACTIONS_TABLE)} AS
    SELECT i.user_id, i.track_id, i.play_count,
           i.weight_base + i.weight_recency / greatest(u.list_length, 1) AS weight,
           i.last_position, u.list_length, i.first_seen,
           (SELECT s.as_of FROM {core_table(INTERACTIONS_STATE_TABLE)} s) AS last_seen,
           i.track_active
    FROM {core_table(INTERACTION_PAIRS_TABLE)} i
    LEFT JOIN {core_table(INTERACTION_USERS_TABLE)} u ON u.user_id = i.user_id
    """


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


# One row: the date every interaction's last_seen reads, and whether the next build must recompute
# every row (a new or migrated database starts so).
_STATE_DDL: Final = (
    f"""
    CREATE TABLE IF NOT EXISTS {core_table(INTERACTIONS_STATE_TABLE)} (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        as_of date,
        built_at timestamptz,
        full_build_needed boolean NOT NULL DEFAULT true
    )
    """,
    f"""
    INSERT INTO {core_table(INTERACTIONS_STATE_TABLE)} (id) VALUES (true)
    ON CONFLICT (id) DO NOTHING
    """,
)

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
    CREATE TABLE IF NOT EXISTS {core_table(INTERACTION_PAIRS_TABLE)} (
        user_id bigint NOT NULL,
        track_id bigint NOT NULL,
        play_count integer NOT NULL,
        -- weight = weight_base + weight_recency / the user's list length (WEIGHT_SQL).
        weight_base double precision NOT NULL,
        weight_recency double precision NOT NULL,
        last_position integer NOT NULL,
        first_seen date NOT NULL,
        track_active boolean NOT NULL,
        CONSTRAINT {quote_ident(INTERACTIONS_PKEY)} PRIMARY KEY (user_id, track_id)
    ) WITH (fillfactor = {_INTERACTIONS_FILLFACTOR})
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {core_table(INTERACTION_USERS_TABLE)} (
        user_id bigint PRIMARY KEY,
        list_length integer NOT NULL
    ) WITH (fillfactor = {_INTERACTION_USERS_FILLFACTOR})
    """,
    f"DROP INDEX IF EXISTS {quote_ident(CORE_SCHEMA)}.{quote_ident(INTERACTIONS_TRACK_INDEX)}",
    f"""
    CREATE INDEX IF NOT EXISTS {quote_ident(INTERACTION_PAIRS_TRACK_INDEX)}
        ON {core_table(INTERACTION_PAIRS_TABLE)} (track_id)
    """,
    *_STATE_DDL,
    f"""
    CREATE TABLE IF NOT EXISTS {core_table(PENDING_PAIRS_TABLE)} (
        user_id bigint NOT NULL,
        track_id bigint NOT NULL,
        PRIMARY KEY (user_id, track_id)
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {core_table(PENDING_USERS_TABLE)} (
        user_id bigint PRIMARY KEY
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {core_table(INACTIVE_TRACKS_TABLE)} (
        track_id bigint PRIMARY KEY
    )
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
        # Every merge calls this: when everything is there, touch nothing. CREATE ... IF NOT
        # EXISTS still locks its table, and would wait for a running autovacuum.
        if _all_exist(conn):
            return
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('core.ddl'))"))
        migrated = _migrate_listen_events_table(conn)
        interactions_migrated = _migrate_interactions_table(conn)
        for ddl in _DDL:
            conn.execute(sa.text(ddl))
        if migrated:
            _move_history_fields(conn)
        if migrated or interactions_migrated:
            # The changes merged before this code ran were not recorded: start over once.
            request_full_interactions_build(conn)
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
        if interactions_migrated or not _exists(conn, INTERACTIONS_TABLE):
            conn.execute(sa.text(interactions_view_sql()))


def request_full_interactions_build(conn: sa.Connection) -> None:
    """Make the next interactions build recompute every row (pending changes are then moot).

    Args:
        conn: A connection inside the caller's transaction.
    """
    conn.execute(
        sa.text(f"UPDATE {core_table(INTERACTIONS_STATE_TABLE)} SET full_build_needed = true")
    )


# Every relation the DDL creates (indexes included): all present means nothing to do.
_RELATIONS: Final = (
    *CORE_TABLES,
    *CORE_VIEWS,
    "listen_pairs_pkey",
    "listen_events_track_id_idx",
    "listen_events_orphans_idx",
    INTERACTIONS_PKEY,
    INTERACTION_PAIRS_TRACK_INDEX,
)


def _all_exist(conn: sa.Connection) -> bool:
    views = conn.execute(
        sa.text(
            """
            SELECT count(*) FILTER (WHERE c.relkind = 'v'), count(c.oid)
            FROM unnest(CAST(:names AS text[])) AS n(name)
            LEFT JOIN pg_class c ON c.oid = to_regclass(n.name)
            """
        ),
        {"names": [f"{CORE_SCHEMA}.{name}" for name in _RELATIONS]},
    ).one()
    n_views = sum(1 for name in _RELATIONS if name in CORE_VIEWS)
    # A first-representation *table* in a view's place (listen_events, user_track_interactions)
    # is migrated.
    return tuple(views) == (n_views, len(_RELATIONS)) and not _generated_duration(conn)


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


def _is_plain_table(conn: sa.Connection, name: str) -> bool:
    """Whether ``core.<name>`` exists as a table (the earlier representations), not a view."""
    kind = conn.execute(
        sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:name)"),
        {"name": f"{CORE_SCHEMA}.{name}"},
    ).scalar_one_or_none()
    return kind == "r"


def _migrate_interactions_table(conn: sa.Connection) -> bool:
    """Turn a ``core.user_track_interactions`` *table* into ``core.interaction_pairs`` (and
    its users' list lengths into ``core.interaction_users``).

    Its rows stay readable through the view until the next build, which recomputes them all.

    Returns:
        Whether there was such a table to migrate.
    """
    if not _is_plain_table(conn, INTERACTIONS_TABLE):
        return False
    old = core_table(INTERACTIONS_TABLE)
    stored = core_table(INTERACTION_PAIRS_TABLE)
    as_of = conn.execute(sa.text(f"SELECT max(last_seen) FROM {old}")).scalar_one()
    users = core_table(INTERACTION_USERS_TABLE)
    for ddl in (
        f"CREATE TABLE {users} (user_id bigint PRIMARY KEY, list_length integer NOT NULL) "
        f"WITH (fillfactor = {_INTERACTION_USERS_FILLFACTOR})",
        f"""INSERT INTO {users} (user_id, list_length)
            SELECT user_id, max(list_length) FROM {old} GROUP BY user_id""",
        f"ALTER TABLE {old} RENAME TO {quote_ident(INTERACTION_PAIRS_TABLE)}",
        f"ALTER TABLE {stored} DROP COLUMN last_seen",
        # The stored weight as the base term: the view reads the same weights until the build.
        f"ALTER TABLE {stored} RENAME COLUMN weight TO weight_base",
        f"ALTER TABLE {stored} ADD COLUMN weight_recency double precision NOT NULL DEFAULT 0",
        f"ALTER TABLE {stored} ALTER COLUMN weight_recency DROP DEFAULT",
        f"ALTER TABLE {stored} DROP COLUMN list_length",
        f"ALTER TABLE {stored} RESET (autovacuum_enabled)",
        f"ALTER TABLE {stored} SET (fillfactor = {_INTERACTIONS_FILLFACTOR})",
    ):
        conn.execute(sa.text(ddl))
    # The state table does not exist yet in a first-representation database.
    for ddl in _STATE_DDL:
        conn.execute(sa.text(ddl))
    conn.execute(
        sa.text(f"UPDATE {core_table(INTERACTIONS_STATE_TABLE)} SET as_of = :as_of"),
        {"as_of": as_of},
    )
    return True


def _migrate_listen_events_table(conn: sa.Connection) -> bool:
    """Turn a ``core.listen_events`` *table* (the first representation) into ``listen_pairs``.

    Returns:
        Whether there was such a table to migrate.
    """
    if not _is_plain_table(conn, LISTEN_EVENTS_TABLE):
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
