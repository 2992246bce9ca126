"""Set-based merges of one raw snapshot into the ``core`` tables, all inside PostgreSQL.

Semantics (see docs/data-model.md): merging is monotone and order-independent. For every key,

* ``first_seen`` / ``last_seen`` are the smallest / largest merged snapshot dates holding it;
* field values come from the snapshot at ``last_seen`` (a snapshot older than a row's
  ``last_seen`` never overwrites it);
* ``is_active`` is "present in the newest merged snapshot": only a snapshot at least as new as
  every merged one marks rows inactive or active again.

So applying days in order, re-applying any merged day, or back-filling an older day gives the
same state as applying each day once in date order. Every merge compares the snapshot with the
current state by set operations and writes only the rows that differ; listening keeps "in the
newest snapshot" implicit (see ``schema.py``), so its writes follow the day's changes, not the
table's size. Every merge runs in one transaction that
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
    DURATION_SECONDS_SQL,
    INACTIVE_TRACKS_TABLE,
    INTERACTION_PAIRS_TABLE,
    INTERACTION_PAIRS_TRACK_INDEX,
    INTERACTION_USERS_TABLE,
    INTERACTIONS_PKEY,
    INTERACTIONS_STATE_TABLE,
    INTERACTIONS_TABLE,
    LISTEN_EVENTS_TABLE,
    LISTEN_HISTORIES_TABLE,
    LISTEN_PAIRS_TABLE,
    MERGE_LOG_TABLE,
    PENDING_PAIRS_TABLE,
    PENDING_USERS_TABLE,
    TRACKS_TABLE,
    USERS_TABLE,
    WEIGHT_BASE_SQL,
    WEIGHT_RECENCY_SQL,
    core_table,
    ensure_core_schema,
    interactions_index_ddl,
)
from moovitamix_assets.constants import (
    CORE_SCHEMA,
    LISTEN_HISTORY_ENDPOINT,
    RAW_SCHEMA,
    SNAPSHOT_DATE_COLUMN,
    TRACKS_ENDPOINT,
    USERS_ENDPOINT,
)
from moovitamix_assets.contract import GENDERS, GENRES
from moovitamix_assets.defs.ingestion.audits import AuditResult, assert_snapshot_publishable
from moovitamix_assets.warehouse.database import quote_ident

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
    # column -> SQL over the staged snapshot (alias ``s``), written with the record's values.
    derived: Mapping[str, str] = field(default_factory=dict)


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
    derived={"duration_seconds": DURATION_SECONDS_SQL},
)

MERGE_WORK_MEM: Final = "64MB"
# Autovacuum's own default threshold for a new ANALYZE (autovacuum_analyze_scale_factor).
_BULK_LOAD_SHARE: Final = 0.1

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


def _analyze_after_bulk_load(conn: sa.Connection, target: str, inserted: int) -> None:
    """Refresh a table's statistics when this merge loaded a large share of it (first day, or a
    back-fill): the next merge's join plans depend on them, and autovacuum may not have run by
    then. Daily merges, which add a few percent, leave it to autovacuum."""
    rows = conn.execute(
        sa.text("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = to_regclass(:t)"),
        {"t": target},
    ).scalar_one()
    if inserted > _BULK_LOAD_SHARE * float(rows):
        conn.execute(sa.text(f"ANALYZE {target}"))


def _count(conn: sa.Connection, sql: str, params: Mapping[str, object] | None = None) -> int:
    return int(conn.execute(sa.text(sql), dict(params or {})).scalar_one())


def _raw(endpoint: str) -> str:
    return f"{q(RAW_SCHEMA)}.{q(endpoint)}"


def _upsert(
    conn: sa.Connection,
    target: str,
    stage: str,
    values: list[str],
    derived: Mapping[str, str],
    snapshot_date: date,
    is_newest: bool,
    figures: str,
    figure_params: Mapping[str, object],
) -> dict[str, int]:
    """Merge a staged snapshot into a current-state table keyed by ``id``; return counts.

    ``values`` (quoted column names) are taken from the snapshot only when it is at least as new
    as the row's ``last_seen``; ``first_seen``/``last_seen`` widen with LEAST/GREATEST; the newest
    snapshot also marks its rows active (an inactive row's ``last_seen`` is older than any newest
    snapshot, so it is always among the rows written). A row that would not change is not
    rewritten, so re-merging a day writes nothing. ``figures`` (a select list over the stage,
    alias ``s``) is counted in the same pass as the changes.

    MERGE rather than INSERT ... ON CONFLICT: the planner joins the whole stage at once (one hash
    join for the updates and the inserts) instead of probing the key index per row, and the
    advisory lock already excludes a concurrent insert of the same key.
    """
    s_vals = ", ".join(f"s.{c}" for c in values)
    t_vals = ", ".join(f"t.{c}" for c in values)
    params = {"day": snapshot_date, "is_newest": is_newest}
    counts = conn.execute(
        sa.text(
            f"""
            SELECT {figures},
                   count(*) FILTER (WHERE t.id IS NULL) AS inserted,
                   count(*) FILTER (
                       WHERE t.id IS NOT NULL AND :day >= t.last_seen
                         AND ROW({s_vals}) IS DISTINCT FROM ROW({t_vals})) AS updated,
                   count(*) FILTER (WHERE NOT t.is_active AND :is_newest) AS reactivated
            FROM {stage} s LEFT JOIN {target} t ON t.id = s.id
            """
        ),
        {**params, **figure_params},
    ).one()
    assignments = ", ".join(
        [f"{c} = s.{c}" for c in values] + [f"{q(c)} = {expr}" for c, expr in derived.items()]
    )
    derived_cols = "".join(f", {q(c)}" for c in derived)
    derived_vals = "".join(f", {expr}" for expr in derived.values())
    conn.execute(
        sa.text(
            f"""
            MERGE INTO {target} t
            USING {stage} s ON t.id = s.id
            WHEN MATCHED AND :day >= t.last_seen
                AND ROW({s_vals}) IS DISTINCT FROM ROW({t_vals}) THEN UPDATE SET
                {assignments},
                first_seen = LEAST(t.first_seen, :day),
                last_seen = GREATEST(t.last_seen, :day),
                is_active = t.is_active OR :is_newest
            -- Most rows: same values, a newer day. Writing the dates alone spares evaluating and
            -- rewriting every field (and recomputing the generated columns).
            WHEN MATCHED AND (:day < t.first_seen OR :day > t.last_seen) THEN UPDATE SET
                first_seen = LEAST(t.first_seen, :day),
                last_seen = GREATEST(t.last_seen, :day),
                is_active = t.is_active OR :is_newest
            WHEN NOT MATCHED THEN INSERT (
                id, {", ".join(values)}, first_seen, last_seen, is_active{derived_cols}
            ) VALUES (s.id, {s_vals}, :day, :day, :is_newest{derived_vals})
            """
        ),
        params,
    )
    return {name: int(value) for name, value in counts._mapping.items()}


def _mark_inactive(conn: sa.Connection, target: str, stage: str) -> int:
    """Mark inactive the rows the staged (newest) snapshot does not hold; return their count."""
    return int(
        conn.execute(
            sa.text(
                f"""
                UPDATE {target} t SET is_active = false
                WHERE t.is_active AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.id = t.id)
                """
            )
        ).rowcount
    )


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
    # The stage is read by hash joins only: no index, and statistics on the key alone (ANALYZE of
    # every text column costs more than the joins it informs).
    conn.execute(sa.text(f"ANALYZE {stage} (id)"))

    raw_rows = _count(conn, f"SELECT count(*) FROM {_raw(spec.endpoint)} WHERE {snap} = :day", day)
    figures = ", ".join(
        ["count(*) AS snapshot_ids"]
        + [
            f"count(*) FILTER (WHERE {expr.replace('{stage}', stage)}) AS {q(name)}"
            for name, expr in spec.odd_records.items()
        ]
    )
    changes = _upsert(
        conn,
        target,
        stage,
        cols,
        spec.derived,
        snapshot_date,
        is_newest,
        figures,
        {"genders": sorted(GENDERS), "genres": sorted(GENRES)},
    )
    staged = changes["snapshot_ids"]
    inactivated = _mark_inactive(conn, target, stage) if is_newest else 0
    _log_merge(conn, spec.table, snapshot_date)
    _analyze_after_bulk_load(conn, target, changes["inserted"])
    total, active = conn.execute(
        sa.text(f"SELECT count(*), count(*) FILTER (WHERE is_active) FROM {target}")
    ).one()
    counts = {
        "raw_rows": raw_rows,
        "snapshot_ids": staged,
        "inserted": changes["inserted"],
        "updated": changes["updated"],
        "inactivated": inactivated,
        "reactivated": changes["reactivated"],
        "duplicates_resolved": raw_rows - staged,
        **{name: changes[name] for name in spec.odd_records},
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


# The listen_events merge's stages of the pairs it writes and of the orphans it resolves.
_DELTA_STAGE: Final = q("_stage_listen_delta")
_RESOLVED_STAGE: Final = q("_stage_resolved_references")

# A pair's own fields, and those it shares with its user's history record.
_PAIR_VALUES: Final = ("position", "play_count")
_HISTORY_VALUES: Final = ("list_length", "source_created_at", "source_updated_at")


def _stage_histories(conn: sa.Connection, snapshot_date: date) -> str:
    """Stage one history per user of the snapshot; return the temp table's quoted name."""
    histories = q("_stage_listen_history")
    # Latest updated_at wins; on a tie the longer list (the API's lists only grow), then the list
    # itself, so the winner never depends on the raw rows' order.
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {histories}"))
    conn.execute(
        sa.text(
            f"""
            CREATE TEMP TABLE {histories} ON COMMIT DROP AS
            SELECT DISTINCT ON (user_id) user_id, items, created_at, updated_at
            FROM {_raw(LISTEN_HISTORY_ENDPOINT)}
            WHERE {q(SNAPSHOT_DATE_COLUMN)} = :day AND user_id IS NOT NULL
            ORDER BY user_id, updated_at DESC NULLS LAST, created_at DESC NULLS LAST,
                     cardinality(items) DESC NULLS LAST, items DESC NULLS LAST
            """
        ),
        {"day": snapshot_date},
    )
    return histories


def _stage_changed_users(conn: sa.Connection, histories: str, is_newest: bool) -> str:
    """Stage the users whose pairs this merge must compare; return the temp table's name.

    ``core.listen_histories`` holds each user's history in the newest merged snapshot, and the
    active pairs of a user are exactly that history's pairs. A newer (or the same) snapshot serving
    the same record leaves them as they are, so only users with a new, changed or vanished record
    are compared. An older snapshot may widen ``first_seen`` of any pair: all its users are.
    """
    changed = q("_stage_changed_users")
    stored = core_table(LISTEN_HISTORIES_TABLE)
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {changed}"))
    if is_newest:
        select = f"""
            SELECT coalesce(h.user_id, o.user_id) AS user_id
            FROM {histories} h FULL JOIN {stored} o ON o.user_id = h.user_id
            WHERE h.user_id IS NULL OR o.user_id IS NULL
               OR ROW(h.items, h.created_at, h.updated_at)
                  IS DISTINCT FROM ROW(o.items, o.source_created_at, o.source_updated_at)
               -- Migrated from the first representation: the record itself is unknown.
               OR (o.items IS NULL AND o.list_length IS NOT NULL)
        """
    else:
        select = f"SELECT user_id FROM {histories}"
    conn.execute(sa.text(f"CREATE TEMP TABLE {changed} ON COMMIT DROP AS {select}"))
    conn.execute(sa.text(f"ANALYZE {changed}"))
    return changed


def _store_histories(conn: sa.Connection, histories: str, changed: str) -> None:
    """Make ``core.listen_histories`` the newest snapshot's records (only changed users move)."""
    stored = core_table(LISTEN_HISTORIES_TABLE)
    conn.execute(sa.text(f"DELETE FROM {stored} o USING {changed} c WHERE o.user_id = c.user_id"))
    conn.execute(
        sa.text(
            f"""
            INSERT INTO {stored} (
                user_id, items, list_length, source_created_at, source_updated_at
            )
            SELECT h.user_id, h.items, cardinality(h.items), h.created_at, h.updated_at
            FROM {histories} h JOIN {changed} c ON c.user_id = h.user_id
            """
        )
    )


def _merge_pairs(
    conn: sa.Connection, pairs: str, changed: str, snapshot_date: date, newest: date | None
) -> dict[str, int]:
    """Merge the staged pairs of the changed users into ``core.listen_pairs``; return counts.

    The rules of ``_upsert``, with NULL for "in the newest snapshot": an active pair's
    ``last_seen`` is ``newest`` and its history fields are its user's row in
    ``core.listen_histories`` (still the previous snapshot's here: call this before
    ``_store_histories``). So a newer snapshot holding a pair with the same position and play
    count writes nothing; a pair leaving it gets the dates and fields it was last seen with.

    One full join of the stage with the changed users' stored pairs finds every row to write
    (new, changed, back, gone, or dates widened by an older snapshot) with its new values; the
    writes then read that small delta, never the whole table again.
    """
    target = core_table(LISTEN_PAIRS_TABLE)
    delta = _DELTA_STAGE
    is_newest = newest is None or snapshot_date >= newest
    params = {"day": snapshot_date, "newest": newest, "is_newest": is_newest}
    own = [q(c) for c in _PAIR_VALUES]
    history = [q(c) for c in _HISTORY_VALUES]
    # The snapshot date the row's values come from, and whether this snapshot replaces them.
    effective = "coalesce(t.last_seen, CAST(:newest AS date), CAST(:day AS date))"
    takes = f"(CAST(:day AS date) >= {effective})"
    # An active pair's history fields live with its user; a stored pair's with the pair.
    differs = (
        f"(ROW({', '.join(f's.{c}' for c in own)}) IS DISTINCT FROM "
        f"ROW({', '.join(f't.{c}' for c in own)}) OR (t.last_seen IS NOT NULL AND "
        f"ROW({', '.join(f's.{c}' for c in history)}) IS DISTINCT FROM "
        f"ROW({', '.join(f't.{c}' for c in history)})))"
    )
    from_snapshot = f"s.user_id IS NOT NULL AND (t.user_id IS NULL OR {takes})"
    last_seen = """
        CASE WHEN s.user_id IS NULL THEN CAST(:newest AS date)
             WHEN :is_newest OR (t.user_id IS NOT NULL AND t.last_seen IS NULL) THEN NULL
             WHEN t.user_id IS NULL THEN CAST(:day AS date)
             ELSE GREATEST(t.last_seen, :day) END
    """
    own_values = ", ".join(
        f"CASE WHEN {from_snapshot} THEN s.{c} ELSE t.{c} END AS {c}" for c in own
    )
    # Stored only off the newest snapshot: from this snapshot, from the user's history the pair
    # is leaving (``o``), or as they were.
    history_values = ", ".join(
        f"""CASE WHEN ({last_seen}) IS NULL THEN NULL
                 WHEN {from_snapshot} THEN s.{c}
                 WHEN t.last_seen IS NULL THEN o.{c}
                 ELSE t.{c} END AS {c}"""
        for c in history
    )
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {delta}"))
    conn.execute(
        sa.text(
            f"""
            CREATE TEMP TABLE {delta} ON COMMIT DROP AS
            SELECT coalesce(s.user_id, t.user_id) AS user_id,
                   coalesce(s.track_id, t.track_id) AS track_id,
                   t.ctid AS row_id,
                   {own_values},
                   {history_values},
                   CASE WHEN t.user_id IS NULL THEN 'insert'
                        WHEN s.user_id IS NULL THEN 'inactivate'
                        WHEN t.last_seen IS NOT NULL AND :is_newest THEN 'reactivate'
                        ELSE 'update' END AS change,
                   t.user_id IS NOT NULL AND s.user_id IS NOT NULL AND {takes} AND {differs}
                       AS values_changed,
                   CASE WHEN t.user_id IS NULL THEN CAST(:day AS date)
                        ELSE LEAST(t.first_seen, :day) END AS first_seen,
                   -- NULL: in the newest snapshot (an active pair stays so, whatever the day).
                   {last_seen} AS last_seen
            FROM {pairs} s
            FULL JOIN (
                SELECT t.ctid, t.* FROM {target} t
                WHERE t.user_id IN (SELECT user_id FROM {changed})
            ) t ON t.user_id = s.user_id AND t.track_id = s.track_id
            LEFT JOIN {core_table(LISTEN_HISTORIES_TABLE)} o
                ON o.user_id = t.user_id AND s.user_id IS NULL
            WHERE t.user_id IS NULL
               OR (s.user_id IS NULL AND t.last_seen IS NULL AND :is_newest)
               OR (s.user_id IS NOT NULL
                   AND (:day < t.first_seen
                        OR (t.last_seen IS NOT NULL AND (:is_newest OR :day > t.last_seen))
                        OR ({takes} AND {differs})))
            """
        ),
        params,
    )
    conn.execute(sa.text(f"ANALYZE {delta} (row_id, change)"))
    counts = conn.execute(
        sa.text(
            f"""
            SELECT count(*) AS rows,
                   count(*) FILTER (WHERE change = 'insert') AS inserted,
                   count(*) FILTER (WHERE values_changed) AS updated,
                   count(*) FILTER (WHERE change = 'inactivate') AS inactivated,
                   count(*) FILTER (WHERE change = 'reactivate') AS reactivated
            FROM {delta}
            """
        )
    ).one()
    columns = [*own, *history, "first_seen", "last_seen"]
    assignments = ", ".join(f"{c} = d.{c}" for c in columns)
    # Joined on the row's physical address, found by the delta's join: the planner misjudges a
    # join on the two-column key (it multiplies the columns' selectivities) and probes an index
    # per row. The key is compared again, and the advisory lock keeps other merges out.
    to_write = int(counts.rows) - int(counts.inserted)
    written = conn.execute(
        sa.text(
            f"""
            UPDATE {target} t SET {assignments}
            FROM {delta} d
            WHERE d.change <> 'insert' AND t.ctid = d.row_id
              -- A filter, not a second hash key (it would bring the misjudgement back).
              AND ROW(t.user_id, t.track_id) IS NOT DISTINCT FROM ROW(d.user_id, d.track_id)
            """
        )
    ).rowcount
    if written != to_write:
        # Only a writer outside the merges (moving rows under us) can cause this: start over.
        raise RuntimeError(
            f"{target} changed during the merge: {written} of {to_write} rows updated"
        )
    conn.execute(
        sa.text(
            f"""
            INSERT INTO {target} (
                user_id, track_id, {", ".join(columns)}, user_known, track_known
            )
            SELECT d.user_id, d.track_id, {", ".join(f"d.{c}" for c in columns)},
                   {_known("users", "d.user_id")}, {_known("tracks", "d.track_id")}
            FROM {delta} d
            WHERE d.change = 'insert'
            """
        )
    )
    return {name: int(value) for name, value in counts._mapping.items() if name != "rows"}


def _known(table: str, column: str) -> str:
    """SQL: whether ``column``'s id is in ``core.<table>`` (users or tracks), by one key lookup.

    A scalar subquery, not EXISTS: the planner turns EXISTS into a hash of the whole table, which
    costs more than a lookup per row for the few thousand new or orphan pairs of a day.
    """
    target = core_table({"users": USERS_TABLE, "tracks": TRACKS_TABLE}[table])
    return f"coalesce((SELECT true FROM {target} r WHERE r.id = {column}), false)"


def _resolve_references(conn: sa.Connection) -> int:
    """Re-check the orphans' references; return how many rows changed flags.

    Users and tracks are never deleted, so a reference only goes from unknown to known (a late or
    back-filled snapshot listed it): only the orphans (partial index) are looked at, and the few
    rows to change are staged first so the update never scans the whole table.
    """
    target = core_table(LISTEN_PAIRS_TABLE)
    resolved = _RESOLVED_STAGE
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {resolved}"))
    conn.execute(
        sa.text(
            f"""
            CREATE TEMP TABLE {resolved} ON COMMIT DROP AS
            SELECT user_id, track_id, user_known, track_known
            FROM (
                SELECT p.user_id, p.track_id,
                       p.user_known OR {_known("users", "p.user_id")} AS user_known,
                       p.track_known OR {_known("tracks", "p.track_id")} AS track_known,
                       p.user_known AS was_user_known, p.track_known AS was_track_known
                FROM {target} p
                WHERE NOT (p.user_known AND p.track_known)
            ) o
            WHERE (user_known, track_known) <> (was_user_known, was_track_known)
            """
        )
    )
    conn.execute(sa.text(f"ANALYZE {resolved}"))
    return int(
        conn.execute(
            sa.text(
                f"""
                UPDATE {target} t SET user_known = r.user_known, track_known = r.track_known
                FROM {resolved} r
                WHERE t.user_id = r.user_id AND t.track_id = r.track_id
                """
            )
        ).rowcount
    )


def _record_pending(conn: sa.Connection, stored_histories: str | None) -> int:
    """Record what the next interactions build must recompute; return the pairs recorded.

    Every pair this merge wrote (``_merge_pairs``'s delta: new, changed, gone, back, or dates
    widened) or whose orphan flags it resolved; and, when it stored the snapshot's histories,
    every user whose history changed (a list that grew moves the recency of all its pairs: the
    build rewrites that user's list length, not the pairs). Nothing is recorded while a full
    build is due: it recomputes everything anyway.
    """
    full_build = conn.execute(
        sa.text(f"SELECT full_build_needed FROM {core_table(INTERACTIONS_STATE_TABLE)}")
    ).scalar_one_or_none()
    if full_build is None or full_build:
        return 0
    if stored_histories:
        conn.execute(
            sa.text(
                f"""
                INSERT INTO {core_table(PENDING_USERS_TABLE)} (user_id)
                SELECT user_id FROM {stored_histories}
                ON CONFLICT (user_id) DO NOTHING
                """
            )
        )
    return int(
        conn.execute(
            sa.text(
                f"""
                INSERT INTO {core_table(PENDING_PAIRS_TABLE)} (user_id, track_id)
                SELECT user_id, track_id FROM {_DELTA_STAGE}
                UNION SELECT user_id, track_id FROM {_RESOLVED_STAGE}
                ON CONFLICT (user_id, track_id) DO NOTHING
                """
            )
        ).rowcount
    )


def _merge_listen_events(conn: sa.Connection, snapshot_date: date) -> MergeResult:
    started = time.perf_counter()
    _lock(conn, LISTEN_EVENTS_TABLE)
    audits = assert_snapshot_publishable(conn, LISTEN_HISTORY_ENDPOINT, snapshot_date)
    newest = _newest_merged(conn, LISTEN_EVENTS_TABLE)
    is_newest = newest is None or snapshot_date >= newest
    raw = _raw(LISTEN_HISTORY_ENDPOINT)
    pairs = q("_stage_listen_events")
    target = core_table(LISTEN_PAIRS_TABLE)
    users = core_table(USERS_TABLE)
    tracks = core_table(TRACKS_TABLE)

    histories = _stage_histories(conn, snapshot_date)
    changed = _stage_changed_users(conn, histories, is_newest)
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
            JOIN {changed} c ON c.user_id = h.user_id
            CROSS JOIN LATERAL unnest(h.items) WITH ORDINALITY AS e(track_id, ord)
            WHERE e.track_id IS NOT NULL
            GROUP BY h.user_id, e.track_id
            """
        )
    )
    conn.execute(sa.text(f"ANALYZE {pairs} (user_id, track_id)"))

    raw_counts = conn.execute(
        sa.text(
            f"""
            SELECT count(*) AS raw_rows,
                   count(*) FILTER (WHERE user_id IS NULL) AS null_user_records
            FROM {raw} WHERE {q(SNAPSHOT_DATE_COLUMN)} = :day
            """
        ),
        {"day": snapshot_date},
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
    changed_users = _count(conn, f"SELECT count(*) FROM {changed}")
    if not is_newest:
        # Every user of an older snapshot is staged: count its pairs and orphans on the stage.
        # (For the newest snapshot they are its active pairs, counted below for free.)
        snapshot_pairs = conn.execute(
            sa.text(
                f"""
                SELECT count(*) AS pairs,
                       count(*) FILTER (WHERE u.id IS NULL) AS orphan_user_pairs,
                       count(*) FILTER (WHERE k.id IS NULL) AS orphan_track_pairs
                FROM {pairs} p
                LEFT JOIN {users} u ON u.id = p.user_id
                LEFT JOIN {tracks} k ON k.id = p.track_id
                """
            )
        ).one()

    changes = _merge_pairs(conn, pairs, changed, snapshot_date, newest)
    if is_newest:
        _store_histories(conn, histories, changed)
    resolved = _resolve_references(conn)
    pending = _record_pending(conn, changed if is_newest else None)
    _log_merge(conn, LISTEN_EVENTS_TABLE, snapshot_date)
    _analyze_after_bulk_load(conn, target, changes["inserted"])
    totals = conn.execute(
        sa.text(
            f"""
            SELECT count(*) AS total,
                   count(*) FILTER (WHERE last_seen IS NULL) AS active_rows,
                   count(*) FILTER (WHERE NOT user_known) AS orphan_user_rows,
                   count(*) FILTER (WHERE NOT track_known) AS orphan_track_rows,
                   count(*) FILTER (WHERE last_seen IS NULL AND NOT user_known)
                       AS active_orphan_user_rows,
                   count(*) FILTER (WHERE last_seen IS NULL AND NOT track_known)
                       AS active_orphan_track_rows
            FROM {target}
            """
        )
    ).one()
    if is_newest:
        pair_counts = (
            totals.active_rows,
            totals.active_orphan_user_rows,
            totals.active_orphan_track_rows,
        )
    else:
        pair_counts = tuple(snapshot_pairs)
    n_pairs, orphan_user_pairs, orphan_track_pairs = (int(v) for v in pair_counts)
    counts = {
        "raw_rows": int(raw_counts.raw_rows),
        "null_user_records": int(raw_counts.null_user_records),
        "duplicates_resolved": int(
            raw_counts.raw_rows - raw_counts.null_user_records - history_counts.histories
        ),
        "histories": int(history_counts.histories),
        "changed_histories": changed_users,
        "null_items_records": int(history_counts.null_items_records),
        "empty_lists": int(history_counts.empty_lists),
        "list_entries": int(history_counts.list_entries),
        "repeated_entries": int(history_counts.list_entries) - n_pairs,
        "snapshot_pairs": n_pairs,
        "orphan_user_pairs": orphan_user_pairs,
        "orphan_track_pairs": orphan_track_pairs,
        **changes,
        "references_resolved": int(resolved),
        "interaction_pairs_pending": pending,
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


# A build with more pending pairs than this share of the stored ones recomputes every row the bulk
# way instead (first day, migration, a back-fill of an old day).
_FULL_BUILD_SHARE: Final = 0.3

_PAIR_COLUMNS: Final = (
    "user_id",
    "track_id",
    "play_count",
    "weight_base",
    "weight_recency",
    "last_position",
    "first_seen",
    "track_active",
)


def _full_interactions_build(conn: sa.Connection) -> dict[str, int]:
    """Recompute every interaction: TRUNCATE, load without indexes, then one sort per index."""
    target = core_table(INTERACTION_PAIRS_TABLE)
    users = core_table(INTERACTION_USERS_TABLE)
    conn.execute(
        sa.text(
            f"TRUNCATE {target}, {users}, {core_table(PENDING_PAIRS_TABLE)}, "
            f"{core_table(PENDING_USERS_TABLE)}, {core_table(INACTIVE_TRACKS_TABLE)}"
        )
    )
    conn.execute(sa.text(f"ALTER TABLE {target} DROP CONSTRAINT IF EXISTS {q(INTERACTIONS_PKEY)}"))
    conn.execute(
        sa.text(f"DROP INDEX IF EXISTS {q(CORE_SCHEMA)}.{q(INTERACTION_PAIRS_TRACK_INDEX)}")
    )
    inserted = conn.execute(
        sa.text(
            f"""
            INSERT INTO {target} ({", ".join(_PAIR_COLUMNS)})
            SELECT e.user_id, e.track_id, e.play_count, {WEIGHT_BASE_SQL},
                   {WEIGHT_RECENCY_SQL}, e.position, e.first_seen, k.is_active
            FROM {core_table(LISTEN_PAIRS_TABLE)} e
            JOIN {core_table(TRACKS_TABLE)} k ON k.id = e.track_id
            WHERE e.last_seen IS NULL AND e.user_known AND e.track_known
            """
        )
    ).rowcount
    for ddl in interactions_index_ddl():
        conn.execute(sa.text(ddl))
    users_written = conn.execute(
        sa.text(
            f"""
            INSERT INTO {users} (user_id, list_length)
            SELECT user_id, list_length FROM {core_table(LISTEN_HISTORIES_TABLE)}
            WHERE list_length IS NOT NULL
            """
        )
    ).rowcount
    conn.execute(
        sa.text(
            f"INSERT INTO {core_table(INACTIVE_TRACKS_TABLE)} (track_id) "
            f"SELECT id FROM {core_table(TRACKS_TABLE)} WHERE NOT is_active"
        )
    )
    conn.execute(sa.text(f"ANALYZE {target}"))
    conn.execute(sa.text(f"ANALYZE {users}"))
    return {
        "full_build": 1,
        "inserted": int(inserted),
        "updated": 0,
        "deleted": 0,
        "list_lengths_written": int(users_written),
        "tracks_changed_activity": 0,
        "track_active_updated": 0,
    }


def _take(conn: sa.Connection, pending: str, stage: str, key: str) -> int:
    """Move the rows of a pending table into a new temp table (same transaction); return them."""
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {stage}"))
    conn.execute(
        sa.text(f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT * FROM {pending} LIMIT 0")
    )
    taken = conn.execute(
        sa.text(
            f"""
            WITH taken AS (DELETE FROM {pending} RETURNING {key})
            INSERT INTO {stage} ({key}) SELECT {key} FROM taken
            """
        )
    ).rowcount
    conn.execute(sa.text(f"ANALYZE {stage}"))
    return int(taken)


def _sync_list_lengths(conn: sa.Connection, users: str) -> int:
    """Make the staged users' list lengths those of ``core.listen_histories``; return the writes.

    A list that grew changes the recency of all its pairs; one row per user records it.
    """
    return int(
        conn.execute(
            sa.text(
                f"""
                MERGE INTO {core_table(INTERACTION_USERS_TABLE)} t
                USING (
                    SELECT c.user_id, h.list_length
                    FROM {users} c
                    LEFT JOIN {core_table(LISTEN_HISTORIES_TABLE)} h ON h.user_id = c.user_id
                ) s ON t.user_id = s.user_id
                WHEN MATCHED AND s.list_length IS NULL THEN DELETE
                WHEN MATCHED AND t.list_length <> s.list_length THEN
                    UPDATE SET list_length = s.list_length
                WHEN NOT MATCHED AND s.list_length IS NOT NULL THEN
                    INSERT (user_id, list_length) VALUES (s.user_id, s.list_length)
                """
            )
        ).rowcount
    )


def _sync_pairs(conn: sa.Connection, pairs: str) -> dict[str, int]:
    """Recompute the staged pairs from ``core.listen_pairs``; write only those that differ.

    Call after ``_sync_track_activity``: the inactive-tracks table is then current and gives
    ``track_active`` without a join with ``core.tracks``.
    """
    target = core_table(INTERACTION_PAIRS_TABLE)
    delta = q("_stage_interactions_delta")
    values = [c for c in _PAIR_COLUMNS if c not in ("user_id", "track_id")]
    fresh = (
        f"e.play_count, {WEIGHT_BASE_SQL} AS weight_base, {WEIGHT_RECENCY_SQL} AS weight_recency, "
        "e.position AS last_position, e.first_seen, NOT EXISTS ("
        f"SELECT 1 FROM {core_table(INACTIVE_TRACKS_TABLE)} m WHERE m.track_id = c.track_id"
        ") AS track_active"
    )
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {delta}"))
    conn.execute(
        sa.text(
            f"""
            CREATE TEMP TABLE {delta} ON COMMIT DROP AS
            SELECT c.user_id, c.track_id, t.row_id, f.*,
                   CASE WHEN t.user_id IS NULL THEN 'insert'
                        WHEN f.play_count IS NULL THEN 'delete'
                        ELSE 'update' END AS change
            FROM {pairs} c
            -- One key lookup per pending pair on each side (OFFSET 0 keeps them lookups: the
            -- planner, misjudging the two-column key, would hash the whole tables instead).
            LEFT JOIN LATERAL (
                SELECT {fresh}
                FROM {core_table(LISTEN_PAIRS_TABLE)} e
                WHERE e.user_id = c.user_id AND e.track_id = c.track_id
                  AND e.last_seen IS NULL AND e.user_known AND e.track_known
                OFFSET 0
            ) f ON true
            LEFT JOIN LATERAL (
                SELECT t.ctid AS row_id, t.* FROM {target} t
                WHERE t.user_id = c.user_id AND t.track_id = c.track_id
                OFFSET 0
            ) t ON true
            WHERE (t.user_id IS NULL) <> (f.play_count IS NULL)
               OR ROW({", ".join(f"f.{c}" for c in values)})
                  IS DISTINCT FROM ROW({", ".join(f"t.{c}" for c in values)})
            """
        )
    )
    counts = conn.execute(
        sa.text(
            f"""
            SELECT count(*) FILTER (WHERE change = 'insert') AS inserted,
                   count(*) FILTER (WHERE change = 'update') AS updated,
                   count(*) FILTER (WHERE change = 'delete') AS deleted
            FROM {delta}
            """
        )
    ).one()
    # By physical address, as in _merge_pairs (the planner misjudges the two-column key); the key
    # is compared again, and the advisory locks keep the other writers out.
    same_row = (
        "t.ctid = d.row_id AND ROW(t.user_id, t.track_id) IS NOT DISTINCT FROM "
        "ROW(d.user_id, d.track_id)"
    )
    updated = conn.execute(
        sa.text(
            f"""
            UPDATE {target} t SET {", ".join(f"{c} = d.{c}" for c in values)}
            FROM {delta} d WHERE d.change = 'update' AND {same_row}
            """
        )
    ).rowcount
    deleted = conn.execute(
        sa.text(f"DELETE FROM {target} t USING {delta} d WHERE d.change = 'delete' AND {same_row}")
    ).rowcount
    if (updated, deleted) != (counts.updated, counts.deleted):
        raise RuntimeError(f"{target} changed during the build: start it again")
    conn.execute(
        sa.text(
            f"""
            INSERT INTO {target} ({", ".join(_PAIR_COLUMNS)})
            SELECT {", ".join(f"d.{c}" for c in _PAIR_COLUMNS)}
            FROM {delta} d WHERE d.change = 'insert'
            """
        )
    )
    return {
        "inserted": int(counts.inserted),
        "updated": int(counts.updated),
        "deleted": int(counts.deleted),
    }


def _incremental_interactions_build(conn: sa.Connection, pairs: str, users: str) -> dict[str, int]:
    """Write what the staged pending pairs and users changed, and the tracks that moved."""
    tracks_changed, rows_changed = _sync_track_activity(conn)
    changes = _sync_pairs(conn, pairs)
    lengths = _sync_list_lengths(conn, users)
    return {
        "full_build": 0,
        **changes,
        "list_lengths_written": lengths,
        "tracks_changed_activity": tracks_changed,
        "track_active_updated": rows_changed,
    }


def _sync_track_activity(conn: sa.Connection) -> tuple[int, int]:
    """Carry the tracks that left or came back since the last build into ``track_active``.

    ``core.interaction_inactive_tracks`` holds the tracks inactive at the last build: comparing
    it with ``core.tracks`` finds the few whose flag moved, and only their rows are written.

    Returns:
        The tracks whose flag moved, and the interaction rows rewritten for them.
    """
    moved = q("_stage_moved_tracks")
    inactive = core_table(INACTIVE_TRACKS_TABLE)
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {moved}"))
    conn.execute(
        sa.text(
            f"""
            CREATE TEMP TABLE {moved} ON COMMIT DROP AS
            SELECT k.id, k.is_active
            FROM {core_table(TRACKS_TABLE)} k LEFT JOIN {inactive} m ON m.track_id = k.id
            WHERE k.is_active = (m.track_id IS NOT NULL)
            """
        )
    )
    tracks = _count(conn, f"SELECT count(*) FROM {moved}")
    if tracks == 0:
        return 0, 0
    conn.execute(sa.text(f"ANALYZE {moved}"))
    rows = conn.execute(
        sa.text(
            f"""
            UPDATE {core_table(INTERACTION_PAIRS_TABLE)} t SET track_active = r.is_active
            FROM (
                -- The rows of each moved track by the track index (OFFSET 0 keeps it a lookup:
                -- the planner would scan the whole table for a few hundred tracks).
                SELECT x.row_id, m.is_active
                FROM {moved} m
                CROSS JOIN LATERAL (
                    SELECT p.ctid AS row_id FROM {core_table(INTERACTION_PAIRS_TABLE)} p
                    WHERE p.track_id = m.id AND p.track_active <> m.is_active
                    OFFSET 0
                ) x
            ) r
            WHERE t.ctid = r.row_id
            """
        )
    ).rowcount
    conn.execute(
        sa.text(f"DELETE FROM {inactive} i USING {moved} m WHERE i.track_id = m.id AND m.is_active")
    )
    conn.execute(
        sa.text(f"INSERT INTO {inactive} (track_id) SELECT id FROM {moved} WHERE NOT is_active")
    )
    return tracks, int(rows)


def rebuild_interactions(engine: sa.Engine, *, full: bool = False) -> MergeResult:
    """Bring ``core.user_track_interactions`` up to the current ``core.listen_events``.

    Keeps the active pairs (present in the newest merged listening snapshot) whose user and track
    are known; orphans stay in ``core.listen_events`` only. Writes only what changed since the
    last build: the pairs and the users' list lengths the listen_events merges recorded as
    pending, and the rows of the tracks that left or came back; a row that comes out the same
    is not rewritten. Every row's ``last_seen`` is the one date of ``core.interactions_state``.
    A first build (or one after a migration, or with most pairs pending) recomputes every row
    the bulk way. One transaction: readers see the previous rows, then the new ones.

    Args:
        engine: Engine of the warehouse database.
        full: Recompute every row whatever is pending.

    Returns:
        Counts of the build (``snapshot_date`` is the newest merged listening day).
    """
    started = time.perf_counter()
    ensure_core_schema(engine)
    target = core_table(INTERACTION_PAIRS_TABLE)
    state = core_table(INTERACTIONS_STATE_TABLE)
    pairs = q("_stage_pending_pairs")
    users = q("_stage_pending_users")
    with engine.begin() as conn:
        _lock(conn, INTERACTIONS_TABLE)
        # The listen_events merge records pending rows and reads the state: never both at once.
        _lock(conn, LISTEN_EVENTS_TABLE)
        as_of = _newest_merged(conn, LISTEN_EVENTS_TABLE)
        needed = conn.execute(sa.text(f"SELECT full_build_needed FROM {state}")).scalar()
        full = full or bool(needed)
        if not full:
            taken = _take(conn, core_table(PENDING_PAIRS_TABLE), pairs, "user_id, track_id")
            _take(conn, core_table(PENDING_USERS_TABLE), users, "user_id")
            stored = conn.execute(
                sa.text("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = to_regclass(:t)"),
                {"t": f"{CORE_SCHEMA}.{INTERACTION_PAIRS_TABLE}"},
            ).scalar_one()
            # The planner's row estimate is enough to choose the way.
            full = taken > _FULL_BUILD_SHARE * float(stored)
        if full:
            changes = _full_interactions_build(conn)
        else:
            changes = _incremental_interactions_build(conn, pairs, users)
        conn.execute(
            sa.text(
                f"UPDATE {state} SET as_of = :as_of, built_at = now(), full_build_needed = false"
            ),
            {"as_of": as_of},
        )
        # One scan of the pairs, the active orphans by their partial index. No count of the
        # inactive pairs: it would scan core.listen_pairs (its merge counts them).
        figures = conn.execute(
            sa.text(
                f"""
                SELECT i.total, i.inactive_track_rows,
                       (SELECT count(*) FROM {core_table(LISTEN_PAIRS_TABLE)}
                        WHERE NOT (user_known AND track_known) AND last_seen IS NULL)
                           AS orphan_pairs_excluded
                FROM (
                    SELECT count(*) AS total,
                           count(*) FILTER (WHERE NOT track_active) AS inactive_track_rows
                    FROM {target}
                ) i
                """
            )
        ).one()
    counts = {
        **changes,
        "inactive_track_rows": int(figures.inactive_track_rows),
        "orphan_pairs_excluded": int(figures.orphan_pairs_excluded),
    }
    return MergeResult(
        table=INTERACTIONS_TABLE,
        snapshot_date=as_of,
        counts=counts,
        rows_total=int(figures.total),
        seconds=time.perf_counter() - started,
    )
