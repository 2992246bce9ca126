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
from moovitamix_assets.resources.database import create_schema_sql
from moovitamix_assets.resources.io_manager import Sidecar

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


# A read without rejects (tests and tools that arrange a clean snapshot).
REJECT_COLUMNS_EMPTY = pd.DataFrame(
    {c: pd.Series(dtype="object") for c in ("page", "position", "record_key", "field", "reason")}
    | {"record": pd.Series(dtype="object")}
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


def ensure_bookkeeping_tables(engine: sa.Engine) -> None:
    """Create the raw schema's manifest and rejects tables, with their keys, when missing."""
    with engine.begin() as conn:
        # Two endpoints' first runs may race to create the same tables.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('raw.bookkeeping.ddl'))"))
        conn.execute(sa.text(create_schema_sql(RAW_SCHEMA)))
        for ddl in _DDL:
            conn.execute(sa.text(ddl))


def bookkeeping_sidecars(summary: SnapshotSummary, rejects: pd.DataFrame) -> tuple[Sidecar, ...]:
    """The manifest row and the rejects of one read, as sidecars of the raw table's write.

    The IO manager replaces them in the transaction that replaces the raw partition, so the raw
    table, its manifest and its rejects always describe the same read, and a failed load leaves
    all three as they were.
    """
    match = {"endpoint": summary.endpoint}
    manifest = pd.DataFrame(
        {
            "endpoint": [summary.endpoint],
            SNAPSHOT_DATE_COLUMN: [summary.snapshot_date],
            "api_total": [summary.api_total],
            "pages": [summary.pages],
            "rows_valid": [summary.rows_valid],
            "rows_rejected": [summary.rows_rejected],
            "extra_fields": [list(summary.extra_fields)],
            "missing_fields": [list(summary.missing_fields)],
            "run_id": [summary.run_id],
        }
    )
    rejected = pd.DataFrame(
        {
            # object dtype: an empty read must still say "text" and "date", not float64.
            "endpoint": pd.Series([summary.endpoint] * len(rejects), dtype=object),
            SNAPSHOT_DATE_COLUMN: pd.Series([summary.snapshot_date] * len(rejects), dtype=object),
            "page": rejects["page"].astype("int64").to_numpy(),
            "position": rejects["position"].astype("int64").to_numpy(),
            "record_key": rejects["record_key"].astype(object).to_numpy(),
            "field": rejects["field"].astype(object).to_numpy(),
            "reason": rejects["reason"].astype(object).to_numpy(),
            "record": rejects["record"].astype(object).to_numpy(),
        }
    )
    return (
        Sidecar(RAW_SCHEMA, MANIFEST_TABLE, manifest, match),
        Sidecar(RAW_SCHEMA, REJECTS_TABLE, rejected, match),
    )
