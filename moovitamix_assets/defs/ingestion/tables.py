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
from moovitamix_assets.warehouse.columns import table as columns_of
from moovitamix_assets.warehouse.database import create_schema_sql

MANIFEST_TABLE: Final = "snapshot_manifest"
REJECTS_TABLE: Final = "rejects"
RAW_KEYS: Final[dict[str, dg.AssetKey]] = {e: dg.AssetKey([RAW_SCHEMA, e]) for e in ENDPOINTS}

# Every column of each raw table with its PostgreSQL type, from the warehouse's column file: the
# contract's fields after the partition column. Declared, not inferred: a first read with no rows
# must create the same table.
RAW_COLUMNS: Final[dict[str, dict[str, str]]] = {
    endpoint: columns_of(f"{RAW_SCHEMA}.{endpoint}").pg_types() for endpoint in ENDPOINTS
}

# The bookkeeping tables' columns come from columns.yaml: table -> (primary key, nullable columns).
_BOOKKEEPING: Final = {
    MANIFEST_TABLE: (("endpoint", SNAPSHOT_DATE_COLUMN), {"run_id"}),
    REJECTS_TABLE: (
        ("endpoint", SNAPSHOT_DATE_COLUMN, "page", "position"),
        {"record_key", "field", "record"},
    ),
}
_DEFAULTS: Final = {"extra_fields": "'{}'", "missing_fields": "'{}'", "fetched_at": "now()"}


def _ddl(table: str) -> str:
    key, nullable = _BOOKKEEPING[table]
    columns = [
        f"{name} {pg_type}{'' if name in nullable else ' NOT NULL'}"
        + (f" DEFAULT {_DEFAULTS[name]}" if name in _DEFAULTS else "")
        for name, pg_type in columns_of(f"{RAW_SCHEMA}.{table}").pg_types().items()
    ]
    return (
        f"CREATE TABLE IF NOT EXISTS {RAW_SCHEMA}.{table} ({', '.join(columns)}, "
        f"PRIMARY KEY ({', '.join(key)}))"
    )


def ensure_bookkeeping_tables(engine: sa.Engine) -> None:
    """Create the raw schema, its manifest and its rejects tables, with their keys, when missing."""
    with engine.begin() as conn:
        # Two first runs may race to create the same tables.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('raw.bookkeeping.ddl'))"))
        conn.execute(sa.text(create_schema_sql(RAW_SCHEMA)))
        for table in _BOOKKEEPING:
            conn.execute(sa.text(_ddl(table)))
