"""Helpers of the fault suite: resources, runs, full table contents, and a gate that holds a COPY.

Every scenario compares the *whole* warehouse (every table of the ``raw`` and ``core`` schemas,
row by row) before and after a faulty run, so "nothing half-written" is checked, not assumed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import dagster as dg
from psycopg2 import sql

from moovitamix_assets.defs.core.assets import core_assets
from moovitamix_assets.defs.ingestion.api import MoovitamixApiResource
from moovitamix_assets.defs.ingestion.assets import raw_assets
from moovitamix_assets.warehouse.database import PostgresResource, connect_psycopg2
from moovitamix_assets.warehouse.io_manager import PostgresPandasIOManager

# Small enough to keep each run around a second, large enough for 3 pages of 100 per endpoint.
RECORDS = 300
SEED = 11
DAILY_ASSETS = [*raw_assets, *core_assets]
WAREHOUSE_SCHEMAS = ("raw", "core")
# Columns that legitimately differ between two successful runs of the same day: who wrote the
# manifest row and when, and when and how often a day was merged.
VOLATILE_COLUMNS: dict[str, frozenset[str]] = {
    "raw.snapshot_manifest": frozenset({"run_id", "fetched_at"}),
    "core.merge_log": frozenset({"first_merged_at", "last_merged_at", "merges"}),
}
# Every wait of the suite is bounded by this many seconds.
WAIT_S = 30.0

Contents = dict[str, list[str]]


def fault_api(base_url: str | dg.EnvVar, **settings: Any) -> MoovitamixApiResource:
    """The API client with short backoffs (the fault cases would otherwise wait for minutes)."""
    defaults: dict[str, Any] = {
        "backoff_factor": 0.01,
        "backoff_jitter": 0.0,
        "backoff_max": 1.0,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
    }
    return MoovitamixApiResource(base_url=base_url, **{**defaults, **settings})


def daily_resources(
    base_url: str | dg.EnvVar,
    database_url: str | dg.EnvVar,
    **api_settings: Any,
) -> dict[str, object]:
    """The three resources of the raw and core assets, pointed at a stand-in and a database."""
    postgres = PostgresResource(database_url=database_url)
    return {
        "moovitamix_api": fault_api(base_url, **api_settings),
        "postgres": postgres,
        "warehouse_io_manager": PostgresPandasIOManager(database=postgres),
    }


def run_day(resources: dict[str, object], partition: str) -> dg.ExecuteInProcessResult:
    """Materialize raw and core for one day in process; a failure is returned, not raised."""
    return dg.materialize(
        DAILY_ASSETS, resources=resources, partition_key=partition, raise_on_error=False
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every failure message of a run, causes included, as one text to search."""
    parts: list[str] = []
    for event in result.all_events:
        if not (event.is_failure or event.is_run_failure):
            continue
        data = event.event_specific_data
        error = getattr(data, "error", None)
        if error is None:
            first = getattr(data, "first_step_failure_event", None)
            error = getattr(getattr(first, "event_specific_data", None), "error", None)
        if event.message:
            parts.append(event.message)
        while error is not None:
            parts.append(error.to_string())
            error = error.cause
    return "\n".join(parts)


def step_starts(result: dg.ExecuteInProcessResult) -> list[str]:
    """Steps that started executing their compute (the work a bad configuration must prevent)."""
    return [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """Plain metadata values of an asset's (single) materialization, e.g. ``raw/users``."""
    key = dg.AssetKey.from_user_string(asset)
    (materialization,) = [
        e.materialization for e in result.get_asset_materialization_events() if e.asset_key == key
    ]
    return {k: v.value for k, v in materialization.metadata.items()}


def table_contents(
    url: str, ignore: dict[str, frozenset[str]] | None = None, schemas: Iterable[str] = ()
) -> Contents:
    """Every row of every table of the warehouse schemas, as sorted row texts.

    Args:
        url: The database.
        ignore: ``schema.table`` -> columns left out of the comparison.
        schemas: Schemas to read (default: ``raw`` and ``core``).

    Returns:
        ``schema.table`` -> sorted ``ROW(...)::text`` of every row (column order as stored).
    """
    ignore = ignore or {}
    conn = connect_psycopg2(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute(
                "SELECT table_schema, table_name, array_agg(column_name::text ORDER BY "
                "ordinal_position) FROM information_schema.columns WHERE table_schema = ANY(%s) "
                "GROUP BY 1, 2 ORDER BY 1, 2",
                (list(schemas or WAREHOUSE_SCHEMAS),),
            )
            tables = cur.fetchall()
            out: Contents = {}
            for schema, table, columns in tables:
                qualified = f"{schema}.{table}"
                kept = [c for c in columns if c not in ignore.get(qualified, frozenset())]
                cur.execute(
                    sql.SQL("SELECT ROW({})::text FROM {} ORDER BY 1").format(
                        sql.SQL(", ").join(map(sql.Identifier, kept)),
                        sql.Identifier(schema, table),
                    )
                )
                out[qualified] = [row[0] for row in cur.fetchall()]
            return out
    finally:
        conn.close()


def assert_same_contents(before: Contents, after: Contents) -> None:
    """Equal table sets and equal rows, with a readable difference when not."""
    assert sorted(after) == sorted(before), "the set of tables changed"
    for table in before:
        gone = sorted(set(before[table]) - set(after[table]))[:3]
        new = sorted(set(after[table]) - set(before[table]))[:3]
        assert after[table] == before[table], (
            f"{table}: {len(before[table])} -> {len(after[table])} rows; e.g. gone {gone}, "
            f"new {new}"
        )


def scalar(url: str, query: str | sql.Composable, params: tuple[Any, ...] = ()) -> Any:
    """First column of the first row of a query (autocommit, its own connection)."""
    conn = connect_psycopg2(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(query, params)
            row = cur.fetchone()
            return None if row is None else row[0]
    finally:
        conn.close()


def execute(url: str, *statements: str | sql.Composable) -> None:
    """Run statements in autocommit on their own connection."""
    conn = connect_psycopg2(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def wait_until(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


@dataclass(frozen=True)
class CopyGate:
    """A row trigger that holds a ``COPY`` into a table at one row until the gate opens.

    A real load is too fast to interrupt reliably on a busy machine; this makes "the COPY is in
    progress" a state the test can wait for: rows before the gated one are already inserted in
    the open transaction, the writer's advisory locks are held, the backend shows ``COPY`` in
    ``pg_stat_activity``. The wait is bounded server-side too (``WAIT_S``).
    """

    url: str
    schema: str
    table: str
    condition: str  # SQL over NEW, e.g. "NEW.id = 42"

    def install(self) -> CopyGate:
        """Create the gate (closed) and its trigger."""
        target = sql.Identifier(self.schema, self.table)
        execute(
            self.url,
            "CREATE TABLE IF NOT EXISTS public.fault_gate (open boolean NOT NULL)",
            "DELETE FROM public.fault_gate",
            "INSERT INTO public.fault_gate VALUES (false)",
            sql.SQL(
                """
                CREATE OR REPLACE FUNCTION public.fault_gate_wait() RETURNS trigger
                LANGUAGE plpgsql AS $$
                DECLARE deadline timestamptz := clock_timestamp() + make_interval(secs => {});
                BEGIN
                    -- A new snapshot per statement (read committed): the opening is seen.
                    WHILE NOT (SELECT open FROM public.fault_gate)
                          AND clock_timestamp() < deadline LOOP
                        PERFORM pg_sleep(0.02);
                    END LOOP;
                    RETURN NEW;
                END $$
                """
            ).format(sql.Literal(WAIT_S)),
            sql.SQL(
                "CREATE TRIGGER fault_gate BEFORE INSERT ON {} FOR EACH ROW WHEN ({}) "
                "EXECUTE FUNCTION public.fault_gate_wait()"
            ).format(target, sql.SQL(self.condition)),
        )
        return self

    def open(self) -> None:
        """Let the held COPY go on."""
        execute(self.url, "UPDATE public.fault_gate SET open = true")

    def remove(self) -> None:
        """Drop the trigger (the table keeps its rows)."""
        execute(
            self.url,
            sql.SQL("DROP TRIGGER IF EXISTS fault_gate ON {}").format(
                sql.Identifier(self.schema, self.table)
            ),
        )

    def held_backend(self) -> int | None:
        """PID of a backend of this database waiting in the gate, if any."""
        return scalar(
            self.url,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query ILIKE 'COPY%%' AND wait_event = 'PgSleep' "
            "LIMIT 1",
        )

    def wait_held(self) -> int:
        """Wait until a COPY is held by the gate; return its backend's PID."""
        return wait_until(self.held_backend, f"a COPY into {self.schema}.{self.table} to hold")


def backends_copying(url: str) -> int:
    """Number of other backends of this database running a COPY."""
    return scalar(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND query ILIKE 'COPY%%' AND state <> 'idle'",
    )


def waiting_for_advisory_lock(url: str) -> int:
    """Number of backends of this database blocked on an advisory lock."""
    return scalar(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
    )


__all__ = [
    "DAILY_ASSETS",
    "RECORDS",
    "SEED",
    "VOLATILE_COLUMNS",
    "WAIT_S",
    "Contents",
    "CopyGate",
    "assert_same_contents",
    "backends_copying",
    "daily_resources",
    "execute",
    "failure_text",
    "fault_api",
    "metadata_of",
    "run_day",
    "scalar",
    "step_starts",
    "table_contents",
    "wait_until",
    "waiting_for_advisory_lock",
]
