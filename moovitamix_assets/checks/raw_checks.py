"""Asset checks of the raw snapshots: the audits of ``raw_audits`` shown and enforced in Dagster.

The same audit functions guard the core merge (write-audit-publish); here they become one check
each, evaluated for the run's partition right after the snapshot is stored. The ERROR ones are
*blocking*: when one fails, the core assets of that endpoint are not even started in the run (and
were they run alone, the merge would refuse the snapshot by itself).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Final

import dagster as dg
import sqlalchemy as sa

from moovitamix_assets.checks.raw_audits import (
    AuditResult,
    audit_completeness,
    audit_reject_rate,
    audit_required_fields,
    audit_schema_drift,
    audit_unique_keys,
    audit_volume_change,
)
from moovitamix_assets.checks.results import daily_check_spec, selected_names, to_check_result
from moovitamix_assets.constants import ENDPOINTS, RAW_SCHEMA
from moovitamix_assets.resources.database import PostgresResource

Audit = Callable[[sa.Connection, str, date], AuditResult]


@dataclass(frozen=True)
class RawCheck:
    """One audit of ``raw_audits`` as an asset check."""

    name: str
    audit: Audit
    blocking: bool
    description: str


# blocking mirrors each audit's severity (ERROR blocks); a test keeps the two in step.
RAW_CHECKS: Final[tuple[RawCheck, ...]] = (
    RawCheck(
        "completeness",
        audit_completeness,
        True,
        "Rows stored plus rows rejected equal the API's announced total for the day (ERROR).",
    ),
    RawCheck(
        "unique_keys",
        audit_unique_keys,
        True,
        "At most 1% of the day's rows repeat another row's id (ERROR: pages overlapped).",
    ),
    RawCheck(
        "required_fields",
        audit_required_fields,
        True,
        "Keys and the timestamps the merge orders by are never null (ERROR).",
    ),
    RawCheck(
        "schema_drift",
        audit_schema_drift,
        True,
        "The API served exactly the contract's fields; the table has the expected types (ERROR).",
    ),
    RawCheck(
        "reject_rate",
        audit_reject_rate,
        True,
        "At most 1% of the API's records failed validation and went to raw.rejects (ERROR).",
    ),
    RawCheck(
        "volume_change",
        audit_volume_change,
        False,
        "Stored rows within ±50% of the previous stored day (WARN: worth a look, never blocks).",
    ),
)


def raw_asset_key(endpoint: str) -> dg.AssetKey:
    """Key of the raw snapshot asset of one endpoint."""
    return dg.AssetKey([RAW_SCHEMA, endpoint])


def run_raw_audits(
    engine: sa.Engine, endpoint: str, snapshot_date: date, names: list[str]
) -> list[AuditResult]:
    """Run the named audits of one stored snapshot, in one read-only transaction.

    Args:
        engine: Engine of the warehouse database.
        endpoint: ``users``, ``tracks`` or ``listen_history``.
        snapshot_date: The partition to audit.
        names: Check names (see ``RAW_CHECKS``).

    Returns:
        One result per name, in the order given.
    """
    by_name = {check.name: check for check in RAW_CHECKS}
    # REPEATABLE READ: every audit sees the same snapshot even if a re-run of the day commits
    # between two of them.
    with engine.connect() as conn:
        conn.execution_options(isolation_level="REPEATABLE READ")
        return [by_name[name].audit(conn, endpoint, snapshot_date) for name in names]


def build_raw_checks(endpoint: str) -> dg.AssetChecksDefinition:
    """Build the checks of one raw snapshot asset (one op, subsettable by check)."""
    asset_key = raw_asset_key(endpoint)
    specs = [
        daily_check_spec(c.name, asset_key, blocking=c.blocking, description=c.description)
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
        """Audit the raw snapshot of the run's partition."""
        snapshot = date.fromisoformat(context.partition_key)
        results = run_raw_audits(
            postgres.engine(), endpoint, snapshot, selected_names(context, asset_key)
        )
        for result in results:
            yield to_check_result(
                asset_key,
                result,
                {"endpoint": endpoint, "snapshot_date": snapshot.isoformat()},
            )

    return _raw_checks


raw_checks: list[dg.AssetChecksDefinition] = [build_raw_checks(e) for e in ENDPOINTS]
