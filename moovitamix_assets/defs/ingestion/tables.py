"""The raw schema's tables: a snapshot table per endpoint, the manifest and the rejects.

``raw.snapshot_manifest`` keeps, per (endpoint, day), the API's ``total`` and the read's figures,
for the completeness audit and the operator; ``raw.rejects`` every record that failed validation.
Both are replaced in the transaction that replaces the day's raw rows.
"""

from __future__ import annotations

from typing import Final

import dagster as dg
import sqlalchemy as sa

from moovitamix_assets.constants import ENDPOINTS, RAW_SCHEMA, SNAPSHOT_DATE_COLUMN
from moovitamix_assets.warehouse import columns
from moovitamix_assets.warehouse.database import create_schema_sql

MANIFEST_TABLE: Final = "snapshot_manifest"
REJECTS_TABLE: Final = "rejects"
RAW_KEYS: Final[dict[str, dg.AssetKey]] = {e: dg.AssetKey([RAW_SCHEMA, e]) for e in ENDPOINTS}

# Every column of each raw table with its PostgreSQL type, from the warehouse's column file: the
# contract's fields after the partition column. Declared, not inferred: a first read with no rows
# must create the same table.
RAW_COLUMNS: Final[dict[str, dict[str, str]]] = {
    endpoint: columns.table(f"{RAW_SCHEMA}.{endpoint}").pg_types() for endpoint in ENDPOINTS
}
_UDT_NAMES: Final = {
    "date": "date",
    "bigint": "int8",
    "text": "text",
    "timestamp with time zone": "timestamptz",
    "bigint[]": "_int8",
}
# The same as information_schema's udt_name, which the schema audit compares with.
EXPECTED_COLUMNS: Final[dict[str, dict[str, str]]] = {
    endpoint: {name: _UDT_NAMES[pg_type] for name, pg_type in columns.items()}
    for endpoint, columns in RAW_COLUMNS.items()
}

_DDL: Final = (
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


def ensure_bookkeeping_tables(engine: sa.Engine) -> None:
    """Create the raw schema, its manifest and its rejects tables, with their keys, when missing."""
    with engine.begin() as conn:
        # Two first runs may race to create the same tables.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('raw.bookkeeping.ddl'))"))
        conn.execute(sa.text(create_schema_sql(RAW_SCHEMA)))
        for ddl in _DDL:
            conn.execute(sa.text(ddl))
