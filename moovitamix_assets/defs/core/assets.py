"""Core layer: the current state of users, tracks and listening, merged from the raw snapshots.

Partition D of a core asset means "merge raw snapshot D". Each merge runs the SQL scripts of
``sql/`` in one transaction, after an advisory lock on its table (concurrent runs serialise)
and the blocking raw audits of its snapshot (write-audit-publish: a failed audit raises before
anything is written). Merging is monotone and order-independent: re-merging a day is a no-op and
back-filling an older day gives the same state (docs/data-model.md).
"""

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Final

import dagster as dg
import sqlalchemy as sa

from moovitamix_assets.constants import (
    CORE_GROUP,
    CORE_SCHEMA,
    LISTEN_HISTORY_ENDPOINT,
    TRACKS_ENDPOINT,
    USERS_ENDPOINT,
)
from moovitamix_assets.contract import GENDERS, GENRES
from moovitamix_assets.defs.ingestion.audits import AuditResult, assert_snapshot_publishable
from moovitamix_assets.defs.ingestion.tables import RAW_KEYS
from moovitamix_assets.freshness import DAILY_FRESHNESS
from moovitamix_assets.partitions import daily_partitions
from moovitamix_assets.step_figures import StepStart, finish_step_figures, start_step_figures
from moovitamix_assets.warehouse import columns
from moovitamix_assets.warehouse.database import (
    PostgresResource,
    create_schema_sql,
    quote_ident,
)

USERS_TABLE: Final = "users"
TRACKS_TABLE: Final = "tracks"
LISTEN_EVENTS_TABLE: Final = "listen_events"
# The rows of the listen_events view (see sql/schema.sql).
LISTEN_PAIRS_TABLE: Final = "listen_pairs"
# Each user's record in the newest merged listening snapshot (only changed users are compared).
LISTEN_HISTORIES_TABLE: Final = "listen_histories"
INTERACTIONS_TABLE: Final = "user_track_interactions"
MERGE_LOG_TABLE: Final = "merge_log"
# The value columns of the id-keyed tables, as the raw records carry them (merge_entity.sql).
USERS_COLUMNS: Final = (
    "first_name",
    "last_name",
    "email",
    "gender",
    "favorite_genres",
    "created_at",
    "updated_at",
)
TRACKS_COLUMNS: Final = (
    "name",
    "artist",
    "songwriters",
    "duration",
    "duration_seconds",
    "genres",
    "album",
    "created_at",
    "updated_at",
)

CORE_USERS = dg.AssetKey([CORE_SCHEMA, USERS_TABLE])
CORE_TRACKS = dg.AssetKey([CORE_SCHEMA, TRACKS_TABLE])
CORE_LISTEN_EVENTS = dg.AssetKey([CORE_SCHEMA, LISTEN_EVENTS_TABLE])
CORE_INTERACTIONS = dg.AssetKey([CORE_SCHEMA, INTERACTIONS_TABLE])

# Where the rows of a view live.
STORAGE_TABLES: Final = {
    LISTEN_EVENTS_TABLE: LISTEN_PAIRS_TABLE,
    INTERACTIONS_TABLE: LISTEN_PAIRS_TABLE,
}

SQL_DIR: Final = Path(__file__).parent / "sql"
# The merges' hash joins hold a whole snapshot (~500,000 pairs): with the 4 MB default they spill.
MERGE_WORK_MEM: Final = "64MB"
# A merge that inserted more than this share of its table refreshes the planner's statistics
# (first day, back-fill); daily merges leave it to autovacuum.
_BULK_LOAD_SHARE: Final = 0.1


def core_table(table: str) -> str:
    """Quoted ``core.<table>`` for SQL text."""
    return f"{quote_ident(CORE_SCHEMA)}.{quote_ident(table)}"


def load_sql(name: str, table: str = "", columns: tuple[str, ...] = ()) -> sa.TextClause:
    """The statements of ``sql/<name>.sql`` as one text clause (psycopg2 runs them in order).

    ``{table}`` becomes ``core.<table>``; ``{columns}``, ``{s.columns}`` and ``{t.columns}`` the
    quoted column list, bare and qualified by the aliases ``s`` and ``t``. Identifiers only (from
    this module's constants): values are always bound parameters.
    """
    text = (SQL_DIR / f"{name}.sql").read_text()
    if table:
        text = text.replace("{table}", core_table(table))
    for alias in ("", "s.", "t."):
        quoted = ", ".join(f"{alias}{quote_ident(c)}" for c in columns)
        text = text.replace(f"{{{alias}columns}}", quoted)
    return sa.text(text)


def _run_sql(conn: sa.Connection, sql: sa.TextClause, **params: Any) -> dict[str, Any]:
    """Run a script; return the row its last statement selects."""
    return dict(conn.execute(sql, params).mappings().one())


def _lock(conn: sa.Connection, key: str) -> None:
    """Hold the table's advisory lock until the transaction ends; give its joins memory."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"core.{key}"})
    conn.execute(sa.text(f"SET LOCAL work_mem = '{MERGE_WORK_MEM}'"))


def ensure_core_schema(engine: sa.Engine) -> None:
    """Create the core schema and tables when missing; migrate the previous representation.

    Touches nothing when every table is there (CREATE ... IF NOT EXISTS still locks a table, and
    would wait for a running merge). Serialised by an advisory lock: two first runs creating the
    same table at once would fail on the catalogue's unique index.

    Args:
        engine: Engine of the warehouse database.
    """
    relations = (
        USERS_TABLE,
        TRACKS_TABLE,
        LISTEN_PAIRS_TABLE,
        LISTEN_HISTORIES_TABLE,
        MERGE_LOG_TABLE,
        LISTEN_EVENTS_TABLE,
        INTERACTIONS_TABLE,
    )
    # Only the previous representation has core.interactions_state.
    check = sa.text(
        "SELECT bool_and(to_regclass(n) IS NOT NULL), to_regclass(:previous) IS NOT NULL"
        " FROM unnest(CAST(:names AS text[])) n"
    )
    names = {
        "names": [f"{CORE_SCHEMA}.{r}" for r in relations],
        "previous": f"{CORE_SCHEMA}.interactions_state",
    }
    with engine.begin() as conn:
        ready, previous = conn.execute(check, names).one()
        if ready and not previous:
            return
        _lock(conn, "ddl")
        ready, previous = conn.execute(check, names).one()
        if ready and not previous:
            return
        if previous:
            conn.execute(load_sql("migrate_views"))
        conn.execute(sa.text(create_schema_sql(CORE_SCHEMA)))
        conn.execute(load_sql("schema"))
        if previous:
            conn.execute(load_sql("restore_migrated"))


@dataclass(frozen=True)
class MergeResult:
    """What one merge did (or the interactions hold): counts for metadata and the checks."""

    table: str
    snapshot_date: date | None
    counts: dict[str, int]
    rows_total: int
    seconds: float
    audits: list[AuditResult] = field(default_factory=list)

    def metadata(self) -> dict[str, int | float]:
        """Flat numeric metadata for a MaterializeResult (``dagster/row_count``: the table's)."""
        return {
            **self.counts,
            "merge_s": round(self.seconds, 3),
            "dagster/row_count": self.rows_total,
        }


def _merge(
    engine: sa.Engine,
    table: str,
    endpoint: str,
    snapshot_date: date,
    scripts: tuple[sa.TextClause, ...],
    before_bulk_load: sa.TextClause | None = None,
    **params: Any,
) -> MergeResult:
    """Merge one raw snapshot into ``core.<table>`` with ``scripts`` (the last one counts).

    ``before_bulk_load`` runs first when the table is empty (indexes cheaper built afterwards);
    ``schema.sql`` then recreates what it dropped.
    """
    started = time.perf_counter()
    ensure_core_schema(engine)
    with engine.begin() as conn:
        _lock(conn, table)
        audits = assert_snapshot_publishable(conn, endpoint, snapshot_date)
        newest = conn.execute(
            sa.text(
                f"SELECT max(snapshot_date) FROM {core_table(MERGE_LOG_TABLE)} "
                "WHERE table_name = :t"
            ),
            {"t": table},
        ).scalar_one()
        is_newest = newest is None or snapshot_date >= newest
        params.update(day=snapshot_date, newest=newest, is_newest=is_newest)
        storage = core_table(STORAGE_TABLES.get(table, table))
        bulk_load = (
            before_bulk_load is not None
            and conn.execute(sa.text(f"SELECT NOT EXISTS (SELECT 1 FROM {storage})")).scalar_one()
        )
        if bulk_load:
            conn.execute(before_bulk_load)
        for script in scripts[:-1]:
            conn.execute(script, params)
        counts = _run_sql(conn, scripts[-1], **params)
        conn.execute(load_sql("log_merge"), {"table_name": table, "day": snapshot_date})
        if bulk_load:
            conn.execute(load_sql("schema"))  # IF NOT EXISTS: builds only what was dropped
        if counts["inserted"] > _BULK_LOAD_SHARE * counts["rows_total"]:
            conn.execute(sa.text(f"ANALYZE {storage}"))
    rows_total = int(counts.pop("rows_total"))
    return MergeResult(
        table=table,
        snapshot_date=snapshot_date,
        counts={**{k: int(v) for k, v in counts.items()}, "is_newest_snapshot": int(is_newest)},
        rows_total=rows_total,
        seconds=time.perf_counter() - started,
        audits=audits,
    )


def merge_users(engine: sa.Engine, snapshot_date: date) -> MergeResult:
    """Merge the raw users snapshot of one day into ``core.users`` (one transaction).

    Raises:
        SnapshotAuditError: The snapshot failed a blocking audit; core is unchanged.
    """
    scripts = (load_sql("stage_users"), load_sql("merge_entity", USERS_TABLE, USERS_COLUMNS))
    vocabularies = {"genders": sorted(GENDERS), "genres": sorted(GENRES)}
    return _merge(engine, USERS_TABLE, USERS_ENDPOINT, snapshot_date, scripts, **vocabularies)


def merge_tracks(engine: sa.Engine, snapshot_date: date) -> MergeResult:
    """Merge the raw tracks snapshot of one day into ``core.tracks`` (one transaction).

    Raises:
        SnapshotAuditError: The snapshot failed a blocking audit; core is unchanged.
    """
    scripts = (load_sql("stage_tracks"), load_sql("merge_entity", TRACKS_TABLE, TRACKS_COLUMNS))
    return _merge(engine, TRACKS_TABLE, TRACKS_ENDPOINT, snapshot_date, scripts)


def merge_listen_events(engine: sa.Engine, snapshot_date: date) -> MergeResult:
    """Normalize one day's raw listen_history into ``core.listen_events`` (one transaction).

    Merge users and tracks of the same day first: the orphan flags are computed against them.

    Raises:
        SnapshotAuditError: The snapshot failed a blocking audit; core is unchanged.
    """
    scripts = (load_sql("merge_listen_events"),)
    return _merge(
        engine,
        LISTEN_EVENTS_TABLE,
        LISTEN_HISTORY_ENDPOINT,
        snapshot_date,
        scripts,
        before_bulk_load=load_sql("drop_track_index"),
    )


def interaction_figures(engine: sa.Engine) -> MergeResult:
    """Count ``core.user_track_interactions``, the view of the current listening the models read.

    Returns:
        Its figures (``snapshot_date`` is the newest merged listening day).
    """
    started = time.perf_counter()
    ensure_core_schema(engine)
    with engine.connect() as conn:
        counts = _run_sql(conn, load_sql("interactions_figures"))
    return MergeResult(
        table=INTERACTIONS_TABLE,
        snapshot_date=counts.pop("as_of"),
        rows_total=int(counts.pop("rows_total")),
        counts={k: int(v) for k, v in counts.items()},
        seconds=time.perf_counter() - started,
    )


_COMMON: Final = {
    "key_prefix": [CORE_SCHEMA],
    "group_name": CORE_GROUP,
    "kinds": {"postgres"},
    "partitions_def": daily_partitions,
    "freshness_policy": DAILY_FRESHNESS,
}


def _materialization(
    context: dg.AssetExecutionContext, result: MergeResult, start: StepStart
) -> dg.MaterializeResult:
    warnings = [a for a in result.audits if not a.passed]
    for audit in warnings:
        context.log.warning(
            f"raw audit {audit.name} of {audit.endpoint} {audit.snapshot_date} ({audit.severity}, "
            f"not blocking): {audit.description}"
        )
    metadata: dict[str, object] = dict(result.metadata())
    metadata |= columns.lineage_metadata(context, context.asset_key)
    if result.snapshot_date is not None:
        metadata["snapshot_date"] = dg.MetadataValue.text(result.snapshot_date.isoformat())
    metadata["raw_audit_warnings"] = len(warnings)
    return dg.MaterializeResult(metadata=finish_step_figures(context, metadata, start))


@dg.asset(
    name=USERS_TABLE,
    deps=[RAW_KEYS[USERS_ENDPOINT]],
    metadata=columns.for_asset(CORE_USERS).definition_metadata(),
    **_COMMON,
)
def core_users(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Current state of every user ever seen: one row per id, merged from the raw snapshot."""
    start = start_step_figures()
    result = merge_users(postgres.engine(), date.fromisoformat(context.partition_key))
    return _materialization(context, result, start)


@dg.asset(
    name=TRACKS_TABLE,
    deps=[RAW_KEYS[TRACKS_ENDPOINT]],
    metadata=columns.for_asset(CORE_TRACKS).definition_metadata(),
    **_COMMON,
)
def core_tracks(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Current state of every track ever seen: one row per id, merged from the raw snapshot."""
    start = start_step_figures()
    result = merge_tracks(postgres.engine(), date.fromisoformat(context.partition_key))
    return _materialization(context, result, start)


@dg.asset(
    name=LISTEN_EVENTS_TABLE,
    deps=[RAW_KEYS[LISTEN_HISTORY_ENDPOINT], CORE_USERS, CORE_TRACKS],
    metadata=columns.for_asset(CORE_LISTEN_EVENTS).definition_metadata(),
    **_COMMON,
)
def core_listen_events(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Listening normalized to one row per (user, track) pair, orphans kept and flagged."""
    start = start_step_figures()
    result = merge_listen_events(postgres.engine(), date.fromisoformat(context.partition_key))
    return _materialization(context, result, start)


@dg.asset(
    name=INTERACTIONS_TABLE,
    # The view reads core.tracks too (track_active), so its column lineage can name it.
    deps=[CORE_LISTEN_EVENTS, CORE_TRACKS],
    metadata=columns.for_asset(CORE_INTERACTIONS).definition_metadata(),
    **_COMMON,
)
def core_user_track_interactions(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Weighted (user, track) interactions of the current listening state: the models' input."""
    start = start_step_figures()
    return _materialization(context, interaction_figures(postgres.engine()), start)


core_assets = [core_users, core_tracks, core_listen_events, core_user_track_interactions]
