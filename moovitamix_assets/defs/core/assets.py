"""Core layer: the current state of users, tracks and listening, merged from the raw snapshots.

Partition D of a core asset merges raw snapshot D: one ``sql/`` script in one transaction, after
the table's advisory lock and the blocking raw audits of D (write-audit-publish). Re-merging a day
is a no-op and back-filling an older day gives the same state (docs/data-model.md).
"""

import time
from collections.abc import Mapping, Sequence
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any, Final, NamedTuple

import dagster as dg
import sqlalchemy as sa

from moovitamix_assets.constants import (
    CORE_GROUP,
    CORE_SCHEMA,
    LISTEN_HISTORY_ENDPOINT,
    RAW_SCHEMA,
    TRACKS_ENDPOINT,
    USERS_ENDPOINT,
)
from moovitamix_assets.contract import GENDERS, GENRES
from moovitamix_assets.defs.ingestion.audits import AuditResult, assert_snapshot_publishable
from moovitamix_assets.defs.ingestion.tables import RAW_KEYS
from moovitamix_assets.freshness import DAILY_FRESHNESS
from moovitamix_assets.partitions import daily_partitions
from moovitamix_assets.step_figures import finish_step_figures, start_step_figures
from moovitamix_assets.warehouse import columns
from moovitamix_assets.warehouse.database import PostgresResource, create_schema_sql, quote_ident

USERS_TABLE: Final = "users"
TRACKS_TABLE: Final = "tracks"
LISTEN_EVENTS_TABLE: Final = "listen_events"
INTERACTIONS_TABLE: Final = "user_track_interactions"
MERGE_LOG_TABLE: Final = "merge_log"
CORE_TABLES: Final = (USERS_TABLE, TRACKS_TABLE, LISTEN_EVENTS_TABLE, INTERACTIONS_TABLE)

CORE_USERS = dg.AssetKey([CORE_SCHEMA, USERS_TABLE])
CORE_TRACKS = dg.AssetKey([CORE_SCHEMA, TRACKS_TABLE])
CORE_LISTEN_EVENTS = dg.AssetKey([CORE_SCHEMA, LISTEN_EVENTS_TABLE])
CORE_INTERACTIONS = dg.AssetKey([CORE_SCHEMA, INTERACTIONS_TABLE])

# Where the rows of a view live (sql/schema.sql).
STORAGE_TABLES: Final = {LISTEN_EVENTS_TABLE: "listen_pairs", INTERACTIONS_TABLE: "listen_pairs"}
# The merges' hash joins hold a whole snapshot (~500,000 pairs): with the 4 MB default they spill.
MERGE_WORK_MEM: Final = "64MB"
# A merge that inserted more than this share of its table refreshes the planner's statistics
# (first day, back-fill); daily merges leave it to autovacuum.
_BULK_LOAD_SHARE: Final = 0.1
# The columns of core.users and core.tracks that a snapshot does not give (merge_entity.sql).
_HISTORY: Final = ("first_seen", "last_seen", "is_active")
# What merge_entity.sql derives from the raw values (duration_seconds: null unless MM:SS, minutes
# of any width) and the odd records it counts per table, as SQL over the staged snapshot s.
_DERIVED: Final = {
    "duration_seconds": "CASE WHEN duration ~ '^[0-9]{1,4}:[0-5][0-9]$' THEN"
    " split_part(duration, ':', 1)::integer * 60 + split_part(duration, ':', 2)::integer END",
}
_ODD_RECORDS: Final = {
    USERS_TABLE: {
        # E-mails (case-insensitive) that another id of the same snapshot also uses.
        "duplicate_emails": "lower(s.email) IN"
        " (SELECT lower(email) FROM entity_stage GROUP BY 1 HAVING count(*) > 1)",
        "unknown_gender": "s.gender IS NULL OR NOT (s.gender = ANY (:genders))",
        "unknown_genre": "s.favorite_genres IS NULL OR NOT (s.favorite_genres = ANY (:genres))",
    },
    TRACKS_TABLE: {
        "zero_duration": "s.duration = '00:00'",
        "malformed_duration": "s.duration_seconds IS NULL",
    },
}


def core_table(table: str) -> str:
    """Quoted ``core.<table>`` for SQL text."""
    return f"{quote_ident(CORE_SCHEMA)}.{quote_ident(table)}"


def load_sql(
    name: str, table: str = "", columns: Sequence[str] = (), **parts: str
) -> sa.TextClause:
    """``sql/<name>.sql`` as one text clause (psycopg2 runs its statements in order).

    ``{table}`` becomes ``core.<table>``; ``{columns}``, ``{s.columns}`` and ``{t.columns}`` the
    quoted column list, bare and qualified; ``{<part>}`` the SQL of ``parts``. Identifiers and this
    package's SQL only: values are always bound parameters.
    """
    text = (Path(__file__).parent / "sql" / f"{name}.sql").read_text()
    if table:
        parts["table"] = core_table(table)
    for alias in ("", "s.", "t."):
        parts[f"{alias}columns"] = ", ".join(f"{alias}{quote_ident(c)}" for c in columns)
    for part, sql in parts.items():
        text = text.replace(f"{{{part}}}", sql)
    return sa.text(text)


def schema_sql() -> sa.TextClause:
    """``sql/schema.sql``, with the columns and keys of users, tracks and listen_histories from
    columns.yaml."""
    tables = (USERS_TABLE, TRACKS_TABLE, "listen_histories")
    return load_sql("schema", **{t: columns.table(f"core.{t}").column_sql() for t in tables})


def newest_merged(conn: sa.Connection, table: str) -> date | None:
    """The newest snapshot merged into a core table (None before the first merge)."""
    newest = f"SELECT max(snapshot_date) FROM {core_table(MERGE_LOG_TABLE)} WHERE table_name = :t"
    return conn.execute(sa.text(newest), {"t": table}).scalar_one()


def core_tables_exist(conn: sa.Connection, *tables: str) -> bool:
    """Whether every ``core.<table>`` exists (a view or a table)."""
    exists = "SELECT bool_and(to_regclass(n) IS NOT NULL) FROM unnest(CAST(:names AS text[])) n"
    return conn.execute(sa.text(exists), {"names": [f"core.{t}" for t in tables]}).scalar_one()


def _lock(conn: sa.Connection, key: str) -> None:
    """Hold the table's advisory lock until the transaction ends; give its joins memory."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"core.{key}"})
    conn.execute(sa.text(f"SET LOCAL work_mem = '{MERGE_WORK_MEM}'"))


def ensure_core_schema(engine: sa.Engine) -> None:
    """Create the core schema and tables when missing; migrate the previous representation.

    Touches nothing when every table is there (CREATE ... IF NOT EXISTS would wait for a running
    merge's lock). Under an advisory lock: two first runs would collide in the catalogue.
    """
    relations = (*CORE_TABLES, "listen_pairs", "listen_histories", MERGE_LOG_TABLE)
    with engine.begin() as conn:
        for _ in range(2):  # checked again once locked: another run may have done it
            # Only the previous representation has core.interactions_state.
            previous = core_tables_exist(conn, "interactions_state")
            if not previous and core_tables_exist(conn, *relations):
                return
            _lock(conn, "ddl")
        if previous:
            conn.execute(load_sql("migrate_views"))
        conn.execute(sa.text(create_schema_sql(CORE_SCHEMA)))
        conn.execute(schema_sql())
        if previous:
            conn.execute(load_sql("restore_migrated"))


class MergeResult(NamedTuple):
    """What one merge did (or the interactions hold): counts for metadata and the checks."""

    snapshot_date: date | None
    counts: dict[str, int]
    rows_total: int
    audits: list[AuditResult] = []

    @classmethod
    def of(cls, row: Mapping[str, Any], snapshot_date: date | None, **more: Any) -> "MergeResult":
        """From a script's counts, ``rows_total`` among them."""
        counts = {k: int(v) for k, v in row.items()}
        return cls(snapshot_date, counts, counts.pop("rows_total"), **more)


def merge(engine: sa.Engine, snapshot_date: date, table: str) -> MergeResult:
    """Merge one raw snapshot into ``core.<table>`` in one transaction (listening: after the users
    and tracks of the same day, its orphan flags are computed against them).

    Raises:
        SnapshotAuditError: The snapshot failed a blocking audit; core is unchanged.
    """
    ensure_core_schema(engine)
    # The id-keyed tables are named after their endpoints.
    endpoint = LISTEN_HISTORY_ENDPOINT if table == LISTEN_EVENTS_TABLE else table
    key = dg.AssetKey([CORE_SCHEMA, table])
    values = [c.name for c in columns.for_asset(key).columns if c.name not in ("id", *_HISTORY)]
    script = load_sql(
        "merge_listen_events" if table == LISTEN_EVENTS_TABLE else "merge_entity",
        table,
        values,
        raw=f"{RAW_SCHEMA}.{quote_ident(endpoint)}",
        staged=", ".join(f"{_DERIVED.get(c, quote_ident(c))} AS {quote_ident(c)}" for c in values),
        odd_records="".join(
            f"count(*) FILTER (WHERE {sql}) AS {name}, "
            for name, sql in _ODD_RECORDS.get(table, {}).items()
        ),
    )
    with engine.begin() as conn:
        _lock(conn, table)
        audits = assert_snapshot_publishable(conn, endpoint, snapshot_date)
        newest = newest_merged(conn, table)
        is_newest = newest is None or snapshot_date >= newest
        params = {"day": snapshot_date, "newest": newest, "is_newest": is_newest}
        params.update(genders=sorted(GENDERS), genres=sorted(GENRES))
        storage = core_table(STORAGE_TABLES.get(table, table))
        # Into an empty core.listen_pairs the by-track index, filled in random track order, would
        # dirty a page per pair and rewrite it after every checkpoint (full-page images in the
        # WAL): it is dropped and schema.sql builds it again in one sorted pass. The primary key
        # stays: pairs arrive in user order.
        bulk_load = (
            table == LISTEN_EVENTS_TABLE
            and conn.execute(sa.text(f"SELECT NOT EXISTS (SELECT 1 FROM {storage})")).scalar_one()
        )
        if bulk_load:
            conn.execute(sa.text("DROP INDEX IF EXISTS core.listen_events_track_id_idx"))
        counts = conn.execute(script, params).mappings().one()
        conn.execute(load_sql("log_merge"), {"table_name": table, "day": snapshot_date})
        if bulk_load:
            conn.execute(schema_sql())  # IF NOT EXISTS: builds only what was dropped
        if counts["inserted"] > _BULK_LOAD_SHARE * counts["rows_total"]:
            conn.execute(sa.text(f"ANALYZE {storage}"))
    return MergeResult.of({**counts, "is_newest_snapshot": is_newest}, snapshot_date, audits=audits)


merge_users = partial(merge, table=USERS_TABLE)
merge_tracks = partial(merge, table=TRACKS_TABLE)
merge_listen_events = partial(merge, table=LISTEN_EVENTS_TABLE)


def interaction_figures(engine: sa.Engine) -> MergeResult:
    """Count ``core.user_track_interactions``, the view of the current listening the models read
    (``snapshot_date``: the newest merged listening day)."""
    ensure_core_schema(engine)
    with engine.connect() as conn:
        counts = conn.execute(load_sql("interactions_figures")).mappings().one()
        return MergeResult.of(counts, newest_merged(conn, LISTEN_EVENTS_TABLE))


# Each core asset's upstream assets and description.
_ASSETS: Final = {
    USERS_TABLE: (
        [RAW_KEYS[USERS_ENDPOINT]],
        "Current state of every user ever seen: one row per id, merged from the raw snapshot.",
    ),
    TRACKS_TABLE: (
        [RAW_KEYS[TRACKS_ENDPOINT]],
        "Current state of every track ever seen: one row per id, merged from the raw snapshot.",
    ),
    LISTEN_EVENTS_TABLE: (
        [RAW_KEYS[LISTEN_HISTORY_ENDPOINT], CORE_USERS, CORE_TRACKS],
        "Listening normalized to one row per (user, track) pair, orphans kept and flagged.",
    ),
    INTERACTIONS_TABLE: (
        # The view reads core.tracks too (track_active), so its column lineage can name it.
        [CORE_LISTEN_EVENTS, CORE_TRACKS],
        "Weighted (user, track) interactions of the current listening state: the models' input.",
    ),
}


def _core_asset(table: str, deps: list[dg.AssetKey], description: str) -> dg.AssetsDefinition:
    key = dg.AssetKey([CORE_SCHEMA, table])

    @dg.asset(
        key=key,
        deps=deps,
        description=description,
        metadata=columns.for_asset(key).definition_metadata(),
        group_name=CORE_GROUP,
        kinds={"postgres"},
        partitions_def=daily_partitions,
        freshness_policy=DAILY_FRESHNESS,
    )
    def _asset(
        context: dg.AssetExecutionContext, postgres: PostgresResource
    ) -> dg.MaterializeResult:
        start, started = start_step_figures(), time.perf_counter()
        if table == INTERACTIONS_TABLE:
            result = interaction_figures(postgres.engine())
        else:
            result = merge(postgres.engine(), date.fromisoformat(context.partition_key), table)
        warnings = [a for a in result.audits if not a.passed]
        for audit in warnings:
            context.log.warning(
                f"raw audit {audit.name} of {audit.endpoint} {audit.snapshot_date} "
                f"({audit.severity}, not blocking): {audit.description}"
            )
        metadata: dict[str, object] = {
            **result.counts,
            "merge_s": round(time.perf_counter() - started, 3),
            "dagster/row_count": result.rows_total,  # the table's
            **columns.lineage_metadata(context, key),
        }
        if result.snapshot_date is not None:
            metadata["snapshot_date"] = dg.MetadataValue.text(result.snapshot_date.isoformat())
        metadata["raw_audit_warnings"] = len(warnings)
        return dg.MaterializeResult(metadata=finish_step_figures(context, metadata, start))

    return _asset


core_assets = [_core_asset(table, *spec) for table, spec in _ASSETS.items()]
