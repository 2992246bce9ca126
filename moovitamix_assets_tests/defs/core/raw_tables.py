"""Arrange raw snapshots directly in PostgreSQL, as the raw layer stores them, with COPY.

Core merges read only ``raw.<endpoint>`` and ``raw.snapshot_manifest``, so tests (and the core
benchmark) write those from API-shaped records without going through HTTP.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any

import sqlalchemy as sa

from moovitamix_assets.defs.ingestion.tables import RAW_COLUMNS, ensure_bookkeeping_tables

_NULL = r"\N"
_DAY = "snapshot_date = :day"


def create_raw_table(conn: sa.Connection, endpoint: str) -> None:
    """Create ``raw.<endpoint>`` with the columns the raw layer writes (nullable, like pandas')."""
    columns = ", ".join(f"{c} {t}" for c, t in RAW_COLUMNS[endpoint].items())
    conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS raw"))
    conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS raw.{endpoint} ({columns})"))


def _cell(value: Any) -> str:
    if value is None:
        return _NULL
    if isinstance(value, list):
        return "{" + ",".join(str(int(v)) for v in value) + "}"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _timestamp(value: Any) -> Any:
    # The contract's timestamps carry no zone and mean UTC.
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    return value


def load_raw_snapshot(
    engine: sa.Engine,
    endpoint: str,
    snapshot_date: date,
    records: Iterable[Mapping[str, Any]],
    *,
    api_total: int | None = None,
    rows_rejected: int = 0,
    extra_fields: Sequence[str] = (),
    missing_fields: Sequence[str] = (),
    manifest: bool = True,
) -> int:
    """Replace one day of ``raw.<endpoint>`` with ``records`` and write its manifest row.

    Returns:
        The number of rows stored.
    """
    columns = [c for c in RAW_COLUMNS[endpoint] if c != "snapshot_date"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    stored = 0
    for record in records:
        row = [snapshot_date.isoformat()]
        for column in columns:
            value = record.get(column)
            if column in ("created_at", "updated_at"):
                value = _timestamp(value)
            row.append(_cell(value))
        writer.writerow(row)
        stored += 1
    buffer.seek(0)
    with engine.begin() as conn:
        create_raw_table(conn, endpoint)
        conn.execute(
            sa.text(f"DELETE FROM raw.{endpoint} WHERE snapshot_date = :day"),
            {"day": snapshot_date},
        )
        cursor = conn.connection.driver_connection.cursor()
        cursor.copy_expert(
            f"COPY raw.{endpoint} (snapshot_date, {', '.join(columns)}) "
            rf"FROM STDIN WITH (FORMAT csv, NULL '\N')",
            buffer,
        )
    if manifest:
        ensure_bookkeeping_tables(engine)
        day = {"endpoint": endpoint, "day": snapshot_date}
        with engine.begin() as conn:
            for table in ("snapshot_manifest", "rejects"):
                conn.execute(
                    sa.text(f"DELETE FROM raw.{table} WHERE endpoint = :endpoint AND {_DAY}"),
                    day,
                )
            conn.execute(
                sa.text(
                    "INSERT INTO raw.snapshot_manifest (endpoint, snapshot_date, api_total, pages, "
                    "rows_valid, rows_rejected, extra_fields, missing_fields) VALUES (:endpoint, "
                    ":day, :total, 1, :stored, :rejected, :extra, :missing)"
                ),
                day
                | {
                    "total": stored + rows_rejected if api_total is None else api_total,
                    "stored": stored,
                    "rejected": rows_rejected,
                    "extra": list(extra_fields),
                    "missing": list(missing_fields),
                },
            )
    return stored


def table_rows(engine: sa.Engine, table: str) -> list[tuple[Any, ...]]:
    """Every row of a table, sorted, for whole-table comparisons."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY 1, 2")).all()
    return [tuple(r) for r in rows]


CORE_DATA_TABLES = (
    "core.users",
    "core.tracks",
    "core.listen_events",
    "core.user_track_interactions",
)


def core_state(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Full contents of every core data table (the merge log's timestamps excluded)."""
    return {table: table_rows(engine, table) for table in CORE_DATA_TABLES}
