"""Bookkeeping beside the raw tables: what the API said about each snapshot, and what it rejected.

`raw.snapshot_manifest` keeps, per (endpoint, snapshot date), the API's own `total` and the read's
figures. The completeness check compares the stored rows with that total, and an operator can see
what a past day looked like without the run's logs. `raw.rejects` keeps every record that failed
validation, with its page and reason, so nothing the API sent is silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pandas as pd
import sqlalchemy as sa

from moovitamix_assets.constants import RAW_SCHEMA, SNAPSHOT_DATE_COLUMN

MANIFEST_TABLE = "snapshot_manifest"
REJECTS_TABLE = "rejects"

_DDL = (
    f"""
    CREATE TABLE IF NOT EXISTS {RAW_SCHEMA}.{MANIFEST_TABLE} (
        endpoint text NOT NULL,
        {SNAPSHOT_DATE_COLUMN} date NOT NULL,
        api_total bigint NOT NULL,
        pages integer NOT NULL,
        rows_valid bigint NOT NULL,
        rows_rejected bigint NOT NULL,
        extra_fields text[] NOT NULL DEFAULT '{{}}',
        missing_fields text[] NOT NULL DEFAULT '{{}}',
        run_id text,
        fetched_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (endpoint, {SNAPSHOT_DATE_COLUMN})
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {RAW_SCHEMA}.{REJECTS_TABLE} (
        endpoint text NOT NULL,
        {SNAPSHOT_DATE_COLUMN} date NOT NULL,
        page integer NOT NULL,
        position integer NOT NULL,
        record_key text,
        field text,
        reason text NOT NULL,
        record text,
        PRIMARY KEY (endpoint, {SNAPSHOT_DATE_COLUMN}, page, position)
    )
    """,
)


@dataclass(frozen=True)
class SnapshotSummary:
    """What one read of an endpoint produced, as stored in the manifest."""

    endpoint: str
    snapshot_date: date
    api_total: int
    pages: int
    rows_valid: int
    rows_rejected: int
    extra_fields: list[str]
    missing_fields: list[str]
    run_id: str | None


def ensure_bookkeeping_tables(conn: sa.Connection) -> None:
    """Create the raw schema's manifest and rejects tables when missing."""
    conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {RAW_SCHEMA}"))
    for ddl in _DDL:
        conn.execute(sa.text(ddl))


def record_snapshot(engine: sa.Engine, summary: SnapshotSummary, rejects: pd.DataFrame) -> None:
    """Replace one (endpoint, day)'s manifest row and rejects in a single transaction.

    Args:
        engine: Engine of the warehouse database.
        summary: The figures of the read.
        rejects: The rejected records (columns page, position, record_key, field, reason, record).
    """
    key = {"endpoint": summary.endpoint, "snapshot_date": summary.snapshot_date}
    with engine.begin() as conn:
        ensure_bookkeeping_tables(conn)
        # Serialise concurrent runs of the same day: both would otherwise delete then insert.
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:lock_key))"),
            {"lock_key": f"raw.snapshot:{summary.endpoint}:{summary.snapshot_date}"},
        )
        for table in (MANIFEST_TABLE, REJECTS_TABLE):
            conn.execute(
                sa.text(
                    f"DELETE FROM {RAW_SCHEMA}.{table} "
                    f"WHERE endpoint = :endpoint AND {SNAPSHOT_DATE_COLUMN} = :snapshot_date"
                ),
                key,
            )
        conn.execute(
            sa.text(
                f"""
                INSERT INTO {RAW_SCHEMA}.{MANIFEST_TABLE} (
                    endpoint, {SNAPSHOT_DATE_COLUMN}, api_total, pages, rows_valid,
                    rows_rejected, extra_fields, missing_fields, run_id
                ) VALUES (
                    :endpoint, :snapshot_date, :api_total, :pages, :rows_valid,
                    :rows_rejected, :extra_fields, :missing_fields, :run_id
                )
                """
            ),
            {
                **key,
                "api_total": summary.api_total,
                "pages": summary.pages,
                "rows_valid": summary.rows_valid,
                "rows_rejected": summary.rows_rejected,
                "extra_fields": list(summary.extra_fields),
                "missing_fields": list(summary.missing_fields),
                "run_id": summary.run_id,
            },
        )
        if len(rejects):
            rows = [
                {
                    **key,
                    "page": int(r.page),
                    "position": int(r.position),
                    "record_key": None if pd.isna(r.record_key) else str(r.record_key),
                    "field": None if pd.isna(r.field) else str(r.field),
                    "reason": str(r.reason),
                    "record": None if pd.isna(r.record) else str(r.record),
                }
                for r in rejects.itertuples(index=False)
            ]
            conn.execute(
                sa.text(
                    f"""
                    INSERT INTO {RAW_SCHEMA}.{REJECTS_TABLE} (
                        endpoint, {SNAPSHOT_DATE_COLUMN}, page, position, record_key, field,
                        reason, record
                    ) VALUES (
                        :endpoint, :snapshot_date, :page, :position, :record_key, :field,
                        :reason, :record
                    )
                    """
                ),
                rows,
            )
