"""Write-audit-publish of the daily recommendations, and the audits their asset checks show.

Today's rows are COPY'd into ``ml.user_recommendations_staging``, audited there against ``core``
and only then replace the published ``ml.user_recommendations`` in the same transaction: rows
that fail an audit never serve, and yesterday's keep serving. A failed day's rows stay in the
staging table for inspection. The asset checks run the same audits on the published table.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pandas as pd
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
# Rows per COPY chunk: the CSV text of a chunk is what memory holds besides the frame.
_COPY_ROWS: Final = 500_000

_USERS = core_table(USERS_TABLE)
_TRACKS = core_table(TRACKS_TABLE)
_INTERACTIONS = core_table(INTERACTIONS_TABLE)


@dataclass(frozen=True)
class RecommendationAudit:
    """One audit of a recommendations table: its SQL counts the offending rows or users."""

    name: str
    description: str
    sql: str


@dataclass(frozen=True)
class AuditOutcome:
    """An audit's result: how many rows or users offend (0 passes) and what that means."""

    name: str
    offending: int
    description: str

    @property
    def passed(self) -> bool:
        return self.offending == 0


AUDITS: Final[tuple[RecommendationAudit, ...]] = (
    RecommendationAudit(
        "exactly_k_per_active_user",
        "active users without exactly K recommendations (fewer only when they heard every other "
        "active track), or users recommended who are not active",
        # {table} is a quoted identifier from this module, never user input.
        f"""
        WITH got AS (SELECT user_id, count(*) AS n FROM {{table}} GROUP BY user_id),
        catalogue AS (SELECT count(*) AS n FROM {_TRACKS} WHERE is_active),
        heard AS (
            SELECT i.user_id, count(*) AS n
            FROM {_INTERACTIONS} i JOIN {_TRACKS} t ON t.id = i.track_id AND t.is_active
            GROUP BY i.user_id
        ),
        active AS (SELECT id FROM {_USERS} WHERE is_active)
        SELECT (
            SELECT count(*) FROM active a
            LEFT JOIN got g ON g.user_id = a.id
            LEFT JOIN heard h ON h.user_id = a.id
            WHERE coalesce(g.n, 0)
                <> least(:k, greatest((SELECT n FROM catalogue) - coalesce(h.n, 0), 0))
        ) + (
            SELECT count(*) FROM got g
            WHERE NOT EXISTS (SELECT 1 FROM active a WHERE a.id = g.user_id)
        )
        """,
    ),
    RecommendationAudit(
        "none_already_listened",
        "recommendations of a track the user already listened to",
        f"SELECT count(*) FROM {{table}} r JOIN {_INTERACTIONS} i USING (user_id, track_id)",
    ),
    RecommendationAudit(
        "only_active_tracks",
        "recommendations of a track unknown to core.tracks or no longer active",
        f"""
        SELECT count(*) FROM {{table}} r LEFT JOIN {_TRACKS} t ON t.id = r.track_id
        WHERE t.id IS NULL OR NOT t.is_active
        """,
    ),
    RecommendationAudit(
        "no_duplicates",
        "(user, track) pairs or (user, rank) positions recommended more than once",
        """
        SELECT (SELECT count(*) FROM (
                    SELECT 1 FROM {table} GROUP BY user_id, track_id HAVING count(*) > 1) d)
             + (SELECT count(*) FROM (
                    SELECT 1 FROM {table} GROUP BY user_id, rank HAVING count(*) > 1) r)
        """,
    ),
)


# The asset's metadata key holding each audit's offending count on the rows it published.
AUDITS_METADATA_KEY: Final = "audit_offending"


def outcomes(offending: dict[str, int]) -> list[AuditOutcome]:
    """The outcomes of every audit from their offending counts."""
    results = []
    for audit in AUDITS:
        count = int(offending[audit.name])
        description = (
            f"{audit.name}: no {audit.description}"
            if count == 0
            else f"{audit.name}: {count} {audit.description}"
        )
        results.append(AuditOutcome(audit.name, count, description))
    return results


def audit_recommendations(conn: sa.Connection, table: str, k: int) -> list[AuditOutcome]:
    """Run every audit on ``table`` (a quoted ``ml`` table name of this module)."""
    return outcomes(
        {
            audit.name: conn.execute(sa.text(audit.sql.format(table=table)), {"k": k}).scalar()
            for audit in AUDITS
        }
    )


@dataclass
class Tally:
    """What went into the staging table, counted batch by batch (the asset's metadata)."""

    k: int
    rows: int = 0
    users: int = 0
    users_short_of_k: int = 0
    cold_start_users: int = 0
    tracks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rows_by_source: Counter[str] = field(default_factory=Counter)

    def count(self, recs: pd.DataFrame) -> pd.DataFrame:
        per_user = recs.groupby("user_id").size()
        self.rows += len(recs)
        self.users += len(per_user)
        self.users_short_of_k += int((per_user < self.k).sum())
        self.cold_start_users += int(
            recs.loc[recs["rank"] == 1, "source"].eq(SOURCE_COLD_START).sum()
        )
        self.tracks = np.union1d(self.tracks, recs["track_id"].to_numpy(dtype=np.int64))
        self.rows_by_source.update(recs["source"].value_counts().to_dict())
        return recs


# Columns with one value for the whole run (the model's version, the run's time): they become the
# staging table's defaults instead of being formatted into the CSV of 10M rows at 1M users, where
# a timestamp took twice as long to format as the rest of its row.
_CONSTANT_COLUMNS: Final = ("model_version", "generated_at")
_VARYING_COLUMNS: Final = tuple(
    c for c in RECOMMENDATION_TABLE_COLUMNS if c not in _CONSTANT_COLUMNS
)


def _constants(recs: pd.DataFrame) -> dict[str, object]:
    """The run's value of each constant column (checked constant over ``recs``)."""
    values: dict[str, object] = {}
    for name in _CONSTANT_COLUMNS:
        column = recs[name]
        first = column.iloc[0]
        if not (column == first).all():
            raise ValueError(f"{name} differs between today's recommendations: one run, one value")
        values[name] = first.to_pydatetime() if isinstance(first, pd.Timestamp) else int(first)
    return values


def _copy(conn: sa.Connection, recs: pd.DataFrame, constants: dict[str, object]) -> None:
    if not len(recs):
        return
    if _constants(recs) != constants:
        raise ValueError("model_version or generated_at differs between batches of one run")
    cursor = conn.connection.driver_connection.cursor()
    columns = ", ".join(_VARYING_COLUMNS)
    for start in range(0, len(recs), _COPY_ROWS):
        buffer = io.StringIO()
        recs.iloc[start : start + _COPY_ROWS][list(_VARYING_COLUMNS)].to_csv(
            buffer, index=False, header=False
        )
        buffer.seek(0)
        cursor.copy_expert(f"COPY {STAGING} ({columns}) FROM STDIN WITH (FORMAT csv)", buffer)


def _set_defaults(conn: sa.Connection, constants: dict[str, object]) -> None:
    cursor = conn.connection.driver_connection.cursor()
    for name, value in constants.items():
        # DDL takes no server-side parameters: psycopg2 quotes the value as a literal.
        cursor.execute(f"ALTER TABLE {STAGING} ALTER COLUMN {name} SET DEFAULT %s", (value,))


def stage_and_publish(
    engine: sa.Engine, batches: Iterable[pd.DataFrame], k: int
) -> list[AuditOutcome]:
    """Stage ``batches`` of recommendations, audit them, and publish them if every audit passes.

    One transaction under an advisory lock: concurrent runs serialise, and the published table
    changes all at once or not at all. Each batch is COPY'd as it comes, so memory holds one.

    Returns:
        Every audit's outcome on the staged rows (published when all passed).
    """
    registry.ensure_registry_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": PUBLISHED})
        # No constraints on the staging copy: duplicates must reach the audit, not abort COPY.
        conn.execute(
            sa.text(f"CREATE TABLE IF NOT EXISTS {STAGING} (LIKE {PUBLISHED} INCLUDING DEFAULTS)")
        )
        conn.execute(sa.text(f"TRUNCATE {STAGING}"))
        constants: dict[str, object] | None = None
        for recs in batches:
            if constants is None and len(recs):
                constants = _constants(recs)
                _set_defaults(conn, constants)
            if constants is not None:
                _copy(conn, recs, constants)
        outcomes = audit_recommendations(conn, STAGING, k)
        if all(o.passed for o in outcomes):
            conn.execute(sa.text(f"DELETE FROM {PUBLISHED}"))
            columns = ", ".join(RECOMMENDATION_TABLE_COLUMNS)
            conn.execute(
                sa.text(f"INSERT INTO {PUBLISHED} ({columns}) SELECT {columns} FROM {STAGING}")
            )
            conn.execute(sa.text(f"TRUNCATE {STAGING}"))
    return outcomes
