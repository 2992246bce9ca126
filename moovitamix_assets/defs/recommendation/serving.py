"""Write-audit-publish of the daily recommendations: COPY'd into a staging table, audited against
``core`` and, in the same transaction and only if every audit passes, swapped in behind the view
``ml.user_recommendations`` (else yesterday's keep serving and the staged rows stay to inspect)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from moovitamix_assets.defs.core.assets import (
    INTERACTIONS_TABLE,
    TRACKS_TABLE,
    USERS_TABLE,
    core_table,
)
from moovitamix_assets.defs.recommendation import registry
from moovitamix_assets.ml.models import SOURCE_COLD_START
from moovitamix_assets.ml.pipeline import RECOMMENDATION_TABLE_COLUMNS

STAGING_TABLE: Final = "user_recommendations_staging"
PUBLISHED: Final = registry.ml_table(registry.RECOMMENDATIONS_TABLE)
STAGING: Final = registry.ml_table(STAGING_TABLE)
_SERVED: Final = registry.ml_table(registry.SERVED_TABLE)
# How long the publication may wait for readers of yesterday's rows (see publish_staging).
SWAP_LOCK_TIMEOUT_MS: Final = 10_000
# Rows per COPY: the CSV text of one slice is what memory holds besides the batch's frame.
_COPY_ROWS: Final = 200_000

# Each audit, a column of sql/audit_recommendations.sql, and what offends it (its check: "No ...").
AUDITS: Final = {
    "exactly_k_per_active_user": "active users without exactly K recommendations (fewer only "
    "when they heard every other active track), or users recommended who are not active",
    "none_already_listened": "recommendations of a track the user already listened to",
    "only_active_tracks": "recommendations of a track unknown to core.tracks or no longer active",
    "no_duplicates": "recommendations repeating a track or a rank already given to the same user",
}
_AUDIT_SQL: Final = (Path(__file__).parent / "sql" / "audit_recommendations.sql").read_text()
# The asset's metadata key holding each audit's offending count on the rows it published.
AUDITS_METADATA_KEY: Final = "audit_offending"


def describe(audit: str, offending: int) -> str:
    """An audit's outcome as its check and the failure message say it."""
    return f"{audit}: {offending or 'no'} {AUDITS[audit]}"


def audit_recommendations(conn: sa.Connection, table: str, k: int) -> dict[str, int]:
    """Each audit's offending rows or users (0 passes) on ``table`` (quoted), in one query."""
    # The names are this module's and core's constants, never user input.
    query = _AUDIT_SQL.format(
        table=table,
        users=core_table(USERS_TABLE),
        tracks=core_table(TRACKS_TABLE),
        interactions=core_table(INTERACTIONS_TABLE),
    )
    row = conn.execute(sa.text(query), {"k": k}).mappings().one()
    return {name: int(row[name]) for name in AUDITS}


# Columns with one value for the whole run (the model's version, the run's time): they become the
# staging table's defaults instead of being formatted into the CSV of 10M rows at 1M users, where
# a timestamp took twice as long to format as the rest of its row.
_VARYING: Final = [
    c for c in RECOMMENDATION_TABLE_COLUMNS if c not in ("model_version", "generated_at")
]


def stage_and_publish(
    engine: sa.Engine, batches: Iterable[pd.DataFrame], k: int, version: int, at: datetime
) -> tuple[dict[str, int], dict[str, Any]]:
    """Stage, audit and, if every audit passes, publish ``batches`` in one transaction under an
    advisory lock (runs serialise): each audit's offending count and ``stage``'s figures."""
    registry.ensure_registry_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": PUBLISHED})
        figures = stage(conn, batches, k, version, at)
        offending = audit_recommendations(conn, STAGING, k)
        if not any(offending.values()):
            publish_staging(conn)
    return offending, figures


def stage(
    conn: sa.Connection, batches: Iterable[pd.DataFrame], k: int, version: int, at: datetime
) -> dict[str, Any]:
    """Replace the staging table's rows with ``batches`` (of model ``version``, generated ``at``),
    each COPY'd as it comes; what went in, counted batch by batch (the asset's metadata)."""
    # No key on the staging table yet: duplicates must reach the audit, not abort COPY. DDL
    # takes no server-side parameters: psycopg2 quotes the values as literals.
    cursor = conn.connection.driver_connection.cursor()
    cursor.execute(
        f"DROP TABLE IF EXISTS {STAGING}; CREATE TABLE {STAGING} (LIKE {_SERVED}); "
        f"ALTER TABLE {STAGING} ALTER COLUMN model_version SET DEFAULT %s, "
        "ALTER COLUMN generated_at SET DEFAULT %s",
        (version, at),
    )
    copy = f"COPY {STAGING} ({', '.join(_VARYING)}) FROM STDIN WITH (FORMAT csv)"
    counts = dict.fromkeys(("rows", "users", "users_short_of_k", "cold_start_users"), 0)
    tracks, sources = np.zeros(0, dtype=np.int64), Counter[str]()
    for recs in batches:
        per_user = recs.groupby("user_id").size()
        counts["rows"] += len(recs)
        counts["users"] += len(per_user)
        counts["users_short_of_k"] += int((per_user < k).sum())
        first = recs.loc[recs["rank"] == 1, "source"]
        counts["cold_start_users"] += int(first.eq(SOURCE_COLD_START).sum())
        tracks = np.union1d(tracks, recs["track_id"].to_numpy(dtype=np.int64))
        sources.update(recs["source"].value_counts().to_dict())
        # pyarrow renders the CSV in C++: pandas' to_csv took 17 s of 10M rows at 1M users, this
        # 3 s. A slice at a time, so memory holds one slice's text, not the batch's.
        table = pa.Table.from_pandas(recs[_VARYING], preserve_index=False)
        for start in range(0, len(table), _COPY_ROWS):
            buffer = pa.BufferOutputStream()
            pa_csv.write_csv(
                table.slice(start, _COPY_ROWS), buffer, pa_csv.WriteOptions(include_header=False)
            )
            cursor.copy_expert(copy, pa.BufferReader(buffer.getvalue()))
        del recs, table  # or they live on while the next batch is computed
    return {**counts, "distinct_tracks": len(tracks), "rows_by_source": dict(sources)}


def publish_staging(conn: sa.Connection) -> None:
    """Point the view ``ml.user_recommendations`` (its grants, whatever reads it) at the staged
    rows in the caller's transaction: readers see yesterday's until the commit, then today's."""
    # The key: one sorted build over rows audited for duplicates. The swap waits for readers of
    # yesterday's rows and serving reads queue behind it: a reader that does not finish fails the
    # publication (yesterday's keep serving; run the asset again) instead of holding every read.
    staging_key = registry.ml_table(f"{STAGING_TABLE}_pkey")
    conn.exec_driver_sql(
        f"""
        ALTER TABLE {STAGING} ADD PRIMARY KEY (user_id, rank),
            ALTER COLUMN model_version DROP DEFAULT, ALTER COLUMN generated_at DROP DEFAULT;
        SET LOCAL lock_timeout = {SWAP_LOCK_TIMEOUT_MS};
        CREATE OR REPLACE VIEW {PUBLISHED} AS
            SELECT {", ".join(RECOMMENDATION_TABLE_COLUMNS)} FROM {STAGING};
        DROP TABLE {_SERVED};
        ALTER TABLE {STAGING} RENAME TO {registry.SERVED_TABLE};
        ALTER INDEX {staging_key} RENAME TO {registry.SERVED_TABLE}_pkey
        """
    )
