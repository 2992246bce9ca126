"""Set-based merges of one raw snapshot into the ``core`` tables, all inside PostgreSQL.

Semantics (see docs/data-model.md): merging is monotone and order-independent. For every key,

* ``first_seen`` / ``last_seen`` are the smallest / largest merged snapshot dates holding it;
* field values come from the snapshot at ``last_seen`` (a snapshot older than a row's
  ``last_seen`` never overwrites it);
* ``is_active`` is "present in the newest merged snapshot": only a snapshot at least as new as
  every merged one marks rows inactive or active again.

So applying days in order, re-applying any merged day, or back-filling an older day gives the
same state as applying each day once in date order. Every merge runs in one transaction that
first takes a per-table advisory lock (concurrent runs serialise) and then runs the blocking raw
audits of its snapshot (write-audit-publish): a failed audit raises before anything is written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Final

import sqlalchemy as sa

from moovitamix_assets.assets.core.schema import (
    INTERACTIONS_TABLE,
    LISTEN_EVENTS_TABLE,
    MERGE_LOG_TABLE,
    TRACKS_TABLE,
    USERS_TABLE,
    core_table,
    ensure_core_schema,
)
from moovitamix_assets.checks.raw_audits import AuditResult, assert_snapshot_publishable
from moovitamix_assets.constants import (
    LISTEN_HISTORY_ENDPOINT,
    RAW_SCHEMA,
    SNAPSHOT_DATE_COLUMN,
    TRACKS_ENDPOINT,
    USERS_ENDPOINT,
)
from moovitamix_assets.models.records import GENDERS, GENRES
from moovitamix_assets.resources.database import quote_ident

q = quote_ident


@dataclass(frozen=True)
class MergeResult:
    """What one merge (or rebuild) did: counts for metadata and for the checks to judge."""

    table: str
    snapshot_date: date | None
    counts: dict[str, int]
    rows_total: int
    seconds: float
    audits: list[AuditResult] = field(default_factory=list)

    def metadata(self) -> dict[str, int | float]:
        """Flat numeric metadata (``dagster/row_count`` included) for a MaterializeResult."""
        return {
            **self.counts,
            "rows_total": self.rows_total,
            "seconds": round(self.seconds, 3),
            "dagster/row_count": self.rows_total,
        }


@dataclass(frozen=True)
class EntitySpec:
    """A current-state table keyed by ``id`` and merged from the raw table of the same name."""

    endpoint: str
    table: str
    columns: tuple[str, ...]
    # metric name -> boolean SQL over the staged snapshot (alias ``s``), counted, never filtered.
    odd_records: Mapping[str, str]


USERS_SPEC: Final = EntitySpec(
    endpoint=USERS_ENDPOINT,
    table=USERS_TABLE,
    columns=(
        "first_name",
        "last_name",
        "email",
        "gender",
        "favorite_genres",
        "created_at",
        "updated_at",
    ),
    odd_records={
        # Rows whose e-mail (case-insensitive) another id of the same snapshot also uses.
        "duplicate_emails": (
            "lower(s.email) IN (SELECT lower(email) FROM {stage} GROUP BY lower(email) "
            "HAVING count(*) > 1)"
        ),
        "timestamps_out_of_order": "s.updated_at < s.created_at",
        "future_timestamps": "s.updated_at > (CAST(:day AS date) + 1)::timestamptz",
        "unknown_gender": "s.gender IS NULL OR NOT (s.gender = ANY(:genders))",
        "unknown_genre": "s.favorite_genres IS NULL OR NOT (s.favorite_genres = ANY(:genres))",
    },
)

TRACKS_SPEC: Final = EntitySpec(
    endpoint=TRACKS_ENDPOINT,
    table=TRACKS_TABLE,
    columns=(
        "name",
        "artist",
        "songwriters",
        "duration",
        "genres",
        "album",
        "created_at",
        "updated_at",
    ),
    odd_records={
        "timestamps_out_of_order": "s.updated_at < s.created_at",
        "future_timestamps": "s.updated_at > (CAST(:day AS date) + 1)::timestamptz",
        "zero_duration": "s.duration = '00:00'",
        "malformed_duration": "s.duration IS NULL OR s.duration !~ '^[0-9]{1,4}:[0-5][0-9]$'",
    },
)

MERGE_WORK_MEM: Final = "64MB"

# Lock keys: one per core table, so users and tracks merge in parallel but never twice at once.
_LOCK_SQL: Final = "SELECT pg_advisory_xact_lock(hashtext(:lock_key))"


def _lock(conn: sa.Connection, table: str) -> None:
    conn.execute(sa.text(_LOCK_SQL), {"lock_key": f"core.{table}"})
    # The merge's hash joins hold a whole snapshot (~500,000 pairs): with the 4 MB default they
    # spill to disk. SET LOCAL ends with the transaction.
    conn.execute(sa.text(f"SET LOCAL work_mem = '{MERGE_WORK_MEM}'"))


def _newest_merged(conn: sa.Connection, table: str) -> date | None:
    return conn.execute(
        sa.text(
            f"SELECT max(snapshot_date) FROM {core_table(MERGE_LOG_TABLE)} WHERE table_name = :t"
        ),
        {"t": table},
    ).scalar_one()


def _log_merge(conn: sa.Connection, table: str, snapshot_date: date) -> None:
    conn.execute(
        sa.text(
            f"""
            INSERT INTO {core_table(MERGE_LOG_TABLE)} AS m (table_name, snapshot_date)
            VALUES (:t, :day)
            ON CONFLICT (table_name, snapshot_date)
            DO UPDATE SET last_merged_at = now(), merges = m.merges + 1
            """
        ),
        {"t": table, "day": snapshot_date},
    )


def _count(conn: sa.Connection, sql: str, params: Mapping[str, object] | None = None) -> int:
    return int(conn.execute(sa.text(sql), dict(params or {})).scalar_one())


def _raw(endpoint: str) -> str:
    return f"{q(RAW_SCHEMA)}.{q(endpoint)}"


def _upsert(
    conn: sa.Connection,
    target: str,
    stage: str,
    keys: tuple[str, ...],
    values: list[str],
    insert_only: Mapping[str, str],
    snapshot_date: date,
    is_newest: bool,
) -> tuple[int, int]:
    """Merge a staged snapshot into a current-state table; return (inserted, updated) counts.

    ``values`` (quoted column names) are taken from the snapshot only when it is at least as new
    as the row's ``last_seen``; ``first_seen``/``last_seen`` widen with LEAST/GREATEST. A row that
    would not change is not rewritten, so re-merging a day writes nothing. ``insert_only`` maps
    column -> SQL expression over the stage (alias ``s``) for columns set on insert only.

    UPDATE ... FROM and INSERT ... WHERE NOT EXISTS rather than INSERT ... ON CONFLICT: the
    planner joins the whole stage at once (hash join) instead of probing the key index per row,
    and the advisory lock already excludes a concurrent insert of the same key.
    """
    join = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in keys)
    key_list = ", ".join(q(k) for k in keys)
    s_vals = ", ".join(f"s.{c}" for c in values)
    t_vals = ", ".join(f"t.{c}" for c in values)
    params = {"day": snapshot_date, "is_newest": is_newest}
    inserted, updated = conn.execute(
        sa.text(
            f"""
            SELECT count(*) FILTER (WHERE t.{q(keys[0])} IS NULL),
                   count(*) FILTER (
                       WHERE t.{q(keys[0])} IS NOT NULL AND :day >= t.last_seen
                         AND ROW({s_vals}) IS DISTINCT FROM ROW({t_vals}))
            FROM {stage} s LEFT JOIN {target} t ON {join}
            """
        ),
        params,
    ).one()
    assignments = ", ".join(
        f"{c} = CASE WHEN :day >= t.last_seen THEN s.{c} ELSE t.{c} END" for c in values
    )
    conn.execute(
        sa.text(
            f"""
            UPDATE {target} t SET
                {assignments},
                first_seen = LEAST(t.first_seen, :day),
                last_seen = GREATEST(t.last_seen, :day)
            FROM {stage} s
            WHERE {join}
              AND (:day < t.first_seen OR :day > t.last_seen
                   OR (:day = t.last_seen AND ROW({s_vals}) IS DISTINCT FROM ROW({t_vals})))
            """
        ),
        params,
    )
    extra_cols = "".join(f", {q(c)}" for c in insert_only)
    extra_vals = "".join(f", {expr}" for expr in insert_only.values())
    conn.execute(
        sa.text(
            f"""
            INSERT INTO {target} (
                {key_list}, {", ".join(values)}, first_seen, last_seen, is_active{extra_cols}
            )
            SELECT {", ".join(f"s.{q(k)}" for k in keys)}, {s_vals}, :day, :day, :is_newest
                   {extra_vals}
            FROM {stage} s
            WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {join})
            """
        ),
        params,
    )
    return int(inserted), int(updated)


def _mark_activity(
    conn: sa.Connection, target: str, stage: str, keys: tuple[str, ...]
) -> tuple[int, int]:
    """Make ``is_active`` = "in the staged (newest) snapshot"; return (inactivated, reactivated)."""
    join = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in keys)
    inactivated = conn.execute(
        sa.text(
            f"""
            UPDATE {target} t SET is_active = false
            WHERE t.is_active AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE {join})
            """
        )
    ).rowcount
    reactivated = conn.execute(
        sa.text(
            f"""
            UPDATE {target} t SET is_active = true
            FROM {stage} s WHERE {join} AND NOT t.is_active
            """
        )
    ).rowcount
    return int(inactivated), int(reactivated)


def _merge_entity(conn: sa.Connection, spec: EntitySpec, snapshot_date: date) -> MergeResult:
    """Merge one snapshot of users or tracks; the caller owns the transaction."""
    started = time.perf_counter()
    _lock(conn, spec.table)
    audits = assert_snapshot_publishable(conn, spec.endpoint, snapshot_date)
    newest = _newest_merged(conn, spec.table)
    is_newest = newest is None or snapshot_date >= newest
    day = {"day": snapshot_date}
    stage = q(f"_stage_{spec.table}")
    target = core_table(spec.table)
    cols = [q(c) for c in spec.columns]
    col_list = ", ".join(cols)
    snap = q(SNAPSHOT_DATE_COLUMN)

    # Duplicate ids: latest updated_at wins, then created_at, then the field values themselves,
    # so the winner never depends on the physical order of the raw rows.
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {stage}"))
    conn.execute(
        sa.text(
            f"""
            CREATE TEMP TABLE {stage} ON COMMIT DROP AS
            SELECT DISTINCT ON (id) id, {col_list}
            FROM {_raw(spec.endpoint)}
            WHERE {snap} = :day AND id IS NOT NULL
            ORDER BY id, updated_at DESC NULLS LAST, created_at DESC NULLS LAST, {col_list}
            """
        ),
        day,
    )
    conn.execute(sa.text(f"ALTER TABLE {stage} ADD PRIMARY KEY (id)"))
    conn.execute(sa.text(f"ANALYZE {stage}"))

    raw_rows = _count(conn, f"SELECT count(*) FROM {_raw(spec.endpoint)} WHERE {snap} = :day", day)
    staged = _count(conn, f"SELECT count(*) FROM {stage}")
    odd_sql = ", ".join(
        f"count(*) FILTER (WHERE {expr.replace('{stage}', stage)}) AS {q(name)}"
        for name, expr in spec.odd_records.items()
    )
    odd = conn.execute(
        sa.text(f"SELECT {odd_sql} FROM {stage} s"),
        {**day, "genders": sorted(GENDERS), "genres": sorted(GENRES)},
    ).one()

    inserted, updated = _upsert(conn, target, stage, ("id",), cols, {}, snapshot_date, is_newest)
    inactivated, reactivated = _mark_activity(conn, target, stage, ("id",)) if is_newest else (0, 0)
    _log_merge(conn, spec.table, snapshot_date)
    total, active = conn.execute(
        sa.text(f"SELECT count(*), count(*) FILTER (WHERE is_active) FROM {target}")
    ).one()
    counts = {
        "raw_rows": raw_rows,
        "snapshot_ids": staged,
        "inserted": int(inserted),
        "updated": int(updated),
        "inactivated": int(inactivated),
        "reactivated": int(reactivated),
        "duplicates_resolved": raw_rows - staged,
        **{name: int(value) for name, value in odd._mapping.items()},
        "active_rows": int(active),
        "is_newest_snapshot": int(is_newest),
    }
    return MergeResult(
        table=spec.table,
        snapshot_date=snapshot_date,
        counts=counts,
        rows_total=int(total),
        seconds=time.perf_counter() - started,
        audits=audits,
    )


def merge_users(engine: sa.Engine, snapshot_date: date) -> MergeResult:
    """Merge the raw users snapshot of one day into ``core.users`` (one transaction).

    Args:
        engine: Engine of the warehouse database.
        snapshot_date: The raw partition to merge.

    Returns:
        The merge's counts.

    Raises:
        SnapshotAuditError: The snapshot failed a blocking audit; core is unchanged.
    """
    ensure_core_schema(engine)
    with engine.begin() as conn:
        return _merge_entity(conn, USERS_SPEC, snapshot_date)


def merge_tracks(engine: sa.Engine, snapshot_date: date) -> MergeResult:
    """Merge the raw tracks snapshot of one day into ``core.tracks`` (one transaction).

    Args:
        engine: Engine of the warehouse database.
        snapshot_date: The raw partition to merge.

    Returns:
        The merge's counts.

    Raises:
        SnapshotAuditError: The snapshot failed a blocking audit; core is unchanged.
    """
    ensure_core_schema(engine)
    with engine.begin() as conn:
        return _merge_entity(conn, TRACKS_SPEC, snapshot_date)


_LISTEN_VALUES: Final = (
    "position",
    "play_count",
    "list_length",
    "source_created_at",
    "source_updated_at",
)


def _merge_listen_events(conn: sa.Connection, snapshot_date: date) -> MergeResult:
    started = time.perf_counter()
    _lock(conn, LISTEN_EVENTS_TABLE)
    audits = assert_snapshot_publishable(conn, LISTEN_HISTORY_ENDPOINT, snapshot_date)
    newest = _newest_merged(conn, LISTEN_EVENTS_TABLE)
    is_newest = newest is None or snapshot_date >= newest
    day = {"day": snapshot_date}
    raw = _raw(LISTEN_HISTORY_ENDPOINT)
    snap = q(SNAPSHOT_DATE_COLUMN)
    histories = q("_stage_listen_history")
    pairs = q("_stage_listen_events")
    target = core_table(LISTEN_EVENTS_TABLE)
    users = core_table(USERS_TABLE)
    tracks = core_table(TRACKS_TABLE)

    # One history per user: latest updated_at wins; on a tie the longer list (the API's lists
    # only grow), then the list itself, so the winner never depends on the raw rows' order.
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {histories}"))
    conn.execute(
        sa.text(
            f"""
            CREATE TEMP TABLE {histories} ON COMMIT DROP AS
            SELECT DISTINCT ON (user_id) user_id, items, created_at, updated_at
            FROM {raw}
            WHERE {snap} = :day AND user_id IS NOT NULL
            ORDER BY user_id, updated_at DESC NULLS LAST, created_at DESC NULLS LAST,
                     cardinality(items) DESC NULLS LAST, items DESC NULLS LAST
            """
        ),
        day,
    )
    # A track listed several times is one pair: its play count is the number of occurrences and
    # its position (1-based) the last one, i.e. the most recent listen.
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {pairs}"))
    conn.execute(
        sa.text(
            f"""
            CREATE TEMP TABLE {pairs} ON COMMIT DROP AS
            SELECT h.user_id, e.track_id,
                   max(e.ord)::integer AS position,
                   count(*)::integer AS play_count,
                   max(cardinality(h.items))::integer AS list_length,
                   max(h.created_at) AS source_created_at,
                   max(h.updated_at) AS source_updated_at
            FROM {histories} h
            CROSS JOIN LATERAL unnest(h.items) WITH ORDINALITY AS e(track_id, ord)
            WHERE e.track_id IS NOT NULL
            GROUP BY h.user_id, e.track_id
            """
        )
    )
    conn.execute(sa.text(f"ALTER TABLE {pairs} ADD PRIMARY KEY (user_id, track_id)"))
    conn.execute(sa.text(f"ANALYZE {pairs}"))

    raw_counts = conn.execute(
        sa.text(
            f"""
            SELECT count(*) AS raw_rows,
                   count(*) FILTER (WHERE user_id IS NULL) AS null_user_records
            FROM {raw} WHERE {snap} = :day
            """
        ),
        day,
    ).one()
    history_counts = conn.execute(
        sa.text(
            f"""
            SELECT count(*) AS histories,
                   count(*) FILTER (WHERE items IS NULL) AS null_items_records,
                   count(*) FILTER (WHERE cardinality(items) = 0) AS empty_lists,
                   coalesce(sum(cardinality(items)), 0) AS list_entries
            FROM {histories}
            """
        )
    ).one()
    pair_counts = conn.execute(
        sa.text(
            f"""
            SELECT count(*) AS pairs,
                   count(*) FILTER (WHERE u.id IS NULL) AS orphan_user_pairs,
                   count(*) FILTER (WHERE k.id IS NULL) AS orphan_track_pairs
            -- Joins, not NOT EXISTS inside FILTER: those run as one index probe per pair.
            FROM {pairs} p
            LEFT JOIN {users} u ON u.id = p.user_id
            LEFT JOIN {tracks} k ON k.id = p.track_id
            """
        )
    ).one()

    known = {
        "user_known": f"EXISTS (SELECT 1 FROM {users} u WHERE u.id = s.user_id)",
        "track_known": f"EXISTS (SELECT 1 FROM {tracks} k WHERE k.id = s.track_id)",
    }
    keys = ("user_id", "track_id")
    values = [q(c) for c in _LISTEN_VALUES]
    inserted, updated = _upsert(conn, target, pairs, keys, values, known, snapshot_date, is_newest)
    inactivated, reactivated = _mark_activity(conn, target, pairs, keys) if is_newest else (0, 0)
    # Users and tracks are never deleted, so a reference only goes from unknown to known (a late
    # or back-filled snapshot listed it): re-check only the orphans (partial index).
    resolved = conn.execute(
        sa.text(
            f"""
            UPDATE {target} t
            SET user_known = EXISTS (SELECT 1 FROM {users} u WHERE u.id = t.user_id),
                track_known = EXISTS (SELECT 1 FROM {tracks} k WHERE k.id = t.track_id)
            WHERE NOT (t.user_known AND t.track_known)
              AND (EXISTS (SELECT 1 FROM {users} u WHERE u.id = t.user_id) <> t.user_known
                   OR EXISTS (SELECT 1 FROM {tracks} k WHERE k.id = t.track_id) <> t.track_known)
            """
        )
    ).rowcount
    _log_merge(conn, LISTEN_EVENTS_TABLE, snapshot_date)
    totals = conn.execute(
        sa.text(
            f"""
            SELECT count(*) AS total,
                   count(*) FILTER (WHERE is_active) AS active_rows,
                   count(*) FILTER (WHERE NOT user_known) AS orphan_user_rows,
                   count(*) FILTER (WHERE NOT track_known) AS orphan_track_rows
            FROM {target}
            """
        )
    ).one()
    counts = {
        "raw_rows": int(raw_counts.raw_rows),
        "null_user_records": int(raw_counts.null_user_records),
        "duplicates_resolved": int(
            raw_counts.raw_rows - raw_counts.null_user_records - history_counts.histories
        ),
        "histories": int(history_counts.histories),
        "null_items_records": int(history_counts.null_items_records),
        "empty_lists": int(history_counts.empty_lists),
        "list_entries": int(history_counts.list_entries),
        "repeated_entries": int(history_counts.list_entries - pair_counts.pairs),
        "snapshot_pairs": int(pair_counts.pairs),
        "orphan_user_pairs": int(pair_counts.orphan_user_pairs),
        "orphan_track_pairs": int(pair_counts.orphan_track_pairs),
        "inserted": int(inserted),
        "updated": int(updated),
        "inactivated": int(inactivated),
        "reactivated": int(reactivated),
        "references_resolved": int(resolved),
        "active_rows": int(totals.active_rows),
        "orphan_user_rows": int(totals.orphan_user_rows),
        "orphan_track_rows": int(totals.orphan_track_rows),
        "is_newest_snapshot": int(is_newest),
    }
    return MergeResult(
        table=LISTEN_EVENTS_TABLE,
        snapshot_date=snapshot_date,
        counts=counts,
        rows_total=int(totals.total),
        seconds=time.perf_counter() - started,
        audits=audits,
    )


def merge_listen_events(engine: sa.Engine, snapshot_date: date) -> MergeResult:
    """Normalize one day's raw listen_history into ``core.listen_events`` (one transaction).

    Merge users and tracks of the same day first: the orphan flags are computed against them.

    Args:
        engine: Engine of the warehouse database.
        snapshot_date: The raw partition to merge.

    Returns:
        The merge's counts.

    Raises:
        SnapshotAuditError: The snapshot failed a blocking audit; core is unchanged.
    """
    ensure_core_schema(engine)
    with engine.begin() as conn:
        return _merge_listen_events(conn, snapshot_date)


# Confidence of one (user, track) pair: damped play count times recency. ln keeps a track played
# ten times from outweighing ten tracks played once; recency runs from 0.5 (first track of the
# list) to 1.0 (last one), since the lists are append-only in listening order.
WEIGHT_SQL: Final = (
    "(1.0 + ln(e.play_count::double precision))"
    " * (0.5 + 0.5 * e.position::double precision / greatest(e.list_length, 1))"
)


def rebuild_interactions(engine: sa.Engine) -> MergeResult:
    """Rebuild ``core.user_track_interactions`` from the current ``core.listen_events``.

    Keeps the active pairs (present in the newest merged listening snapshot) whose user and track
    are known; orphans stay in ``core.listen_events`` only. TRUNCATE and INSERT share one
    transaction, so a reader waits and then sees the new table, never an empty one.

    Args:
        engine: Engine of the warehouse database.

    Returns:
        Row counts of the rebuilt table (``snapshot_date`` is the newest merged listening day).
    """
    started = time.perf_counter()
    ensure_core_schema(engine)
    target = core_table(INTERACTIONS_TABLE)
    events = core_table(LISTEN_EVENTS_TABLE)
    with engine.begin() as conn:
        _lock(conn, INTERACTIONS_TABLE)
        as_of = _newest_merged(conn, LISTEN_EVENTS_TABLE)
        conn.execute(sa.text(f"TRUNCATE {target}"))
        conn.execute(
            sa.text(
                f"""
                INSERT INTO {target} (
                    user_id, track_id, play_count, weight, last_position, list_length,
                    first_seen, last_seen, track_active
                )
                SELECT e.user_id, e.track_id, e.play_count, {WEIGHT_SQL}, e.position,
                       e.list_length, e.first_seen, e.last_seen, k.is_active
                FROM {events} e
                JOIN {core_table(TRACKS_TABLE)} k ON k.id = e.track_id
                WHERE e.is_active AND e.user_known AND e.track_known
                ORDER BY e.user_id, e.track_id
                """
            )
        )
        figures = conn.execute(
            sa.text(
                f"""
                SELECT (SELECT count(*) FROM {target}) AS total,
                       (SELECT count(DISTINCT user_id) FROM {target}) AS users,
                       (SELECT count(DISTINCT track_id) FROM {target}) AS tracks,
                       (SELECT count(*) FROM {target} WHERE NOT track_active)
                           AS inactive_track_rows,
                       (SELECT count(*) FROM {events} WHERE is_active
                           AND NOT (user_known AND track_known)) AS orphan_pairs_excluded,
                       (SELECT count(*) FROM {events} WHERE NOT is_active)
                           AS inactive_pairs_excluded
                """
            )
        ).one()
    counts = {
        "users": int(figures.users),
        "tracks": int(figures.tracks),
        "inactive_track_rows": int(figures.inactive_track_rows),
        "orphan_pairs_excluded": int(figures.orphan_pairs_excluded),
        "inactive_pairs_excluded": int(figures.inactive_pairs_excluded),
    }
    with engine.begin() as conn:
        # Fresh statistics for the recommender's first queries on the new contents.
        conn.execute(sa.text(f"ANALYZE {target}"))
    return MergeResult(
        table=INTERACTIONS_TABLE,
        snapshot_date=as_of,
        counts=counts,
        rows_total=int(figures.total),
        seconds=time.perf_counter() - started,
    )
