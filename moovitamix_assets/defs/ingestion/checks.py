"""Asset checks of the raw snapshots: each audit of ``audits`` as a check of the run's partition.

The ERROR ones are blocking: when one fails, the run does not start the core assets (and a merge
run alone refuses the snapshot by itself).
"""

from collections.abc import Iterator
from datetime import date

import dagster as dg
import sqlalchemy as sa

from moovitamix_assets.check_results import daily_check_spec, selected_names, to_check_result
from moovitamix_assets.constants import ENDPOINTS
from moovitamix_assets.defs.ingestion.audits import AUDITS as RAW_CHECKS
from moovitamix_assets.defs.ingestion.audits import AuditResult, audit_snapshot
from moovitamix_assets.defs.ingestion.tables import RAW_KEYS
from moovitamix_assets.warehouse.database import PostgresResource


def run_raw_audits(
    engine: sa.Engine, endpoint: str, snapshot_date: date, names: list[str]
) -> list[AuditResult]:
    """Run the named audits of one stored snapshot, in one REPEATABLE READ transaction, so every
    audit sees the same snapshot even if a re-run of the day commits in between."""
    with engine.connect() as conn:
        conn.execution_options(isolation_level="REPEATABLE READ")
        return audit_snapshot(conn, endpoint, snapshot_date, names)


def build_raw_checks(endpoint: str) -> dg.AssetChecksDefinition:
    """The checks of one raw snapshot asset (one op, subsettable by check)."""
    asset_key = RAW_KEYS[endpoint]
    specs = [
        daily_check_spec(
            c.name, asset_key, blocking=c.severity == "ERROR", description=c.description
        )
        for c in RAW_CHECKS
    ]

    @dg.multi_asset_check(
        name=f"raw_{endpoint}_checks",
        specs=specs,
        can_subset=True,
        description=f"Audits of the raw {endpoint} snapshot of the run's day.",
    )
    def _raw_checks(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> Iterator[dg.AssetCheckResult]:
        day = date.fromisoformat(context.partition_key)
        names = selected_names(context, asset_key)
        for result in run_raw_audits(postgres.engine(), endpoint, day, names):
            metadata = {"endpoint": endpoint, "snapshot_date": day.isoformat()}
            yield to_check_result(asset_key, result, metadata)

    return _raw_checks


raw_checks: list[dg.AssetChecksDefinition] = [build_raw_checks(e) for e in ENDPOINTS]
