"""The raw schema's tables: a snapshot table per endpoint, the manifest and the rejects.

``raw.snapshot_manifest`` keeps, per (endpoint, day), the API's ``total`` and the read's figures,
for the completeness audit and the operator; ``raw.rejects`` every record that failed validation.
Both are replaced in the transaction that replaces the day's raw rows.
"""

from typing import Final

import dagster as dg
import sqlalchemy as sa

from moovitamix_assets.constants import ENDPOINTS, RAW_SCHEMA
from moovitamix_assets.warehouse.columns import table as columns_of
from moovitamix_assets.warehouse.database import create_schema_sql

MANIFEST_TABLE: Final = "snapshot_manifest"
REJECTS_TABLE: Final = "rejects"
RAW_KEYS: Final[dict[str, dg.AssetKey]] = {e: dg.AssetKey([RAW_SCHEMA, e]) for e in ENDPOINTS}

# Each raw table's columns and types (columns.yaml): the partition column, the contract's fields.
RAW_COLUMNS: Final[dict[str, dict[str, str]]] = {
    endpoint: columns_of(f"{RAW_SCHEMA}.{endpoint}").pg_types() for endpoint in ENDPOINTS
}


def ensure_bookkeeping_tables(engine: sa.Engine) -> None:
    """Create the raw schema, its manifest and its rejects tables, with their keys, when missing."""
    with engine.begin() as conn:
        # Two first runs may race to create the same tables.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('raw.bookkeeping.ddl'))"))
        conn.execute(sa.text(create_schema_sql(RAW_SCHEMA)))
        for table in (MANIFEST_TABLE, REJECTS_TABLE):
            conn.execute(sa.text(columns_of(f"{RAW_SCHEMA}.{table}").create_sql()))
