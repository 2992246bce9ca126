"""Asset checks of the core tables, evaluated after each merge on the state it left.

Three ops, so that blocking works without a cycle: a blocking check must finish before the assets
downstream of its asset start, and an op runs only after every asset it checks. ``core/users`` and
``core/tracks`` share one op (both are upstream of ``core/listen_events``); ``core/listen_events``
and ``core/user_track_interactions`` have one each. Every op is subsettable: selecting one asset
runs only that asset's checks.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import partial
from typing import Final

import dagster as dg
import sqlalchemy as sa

from moovitamix_assets.assets.core.schema import (
    INTERACTIONS_TABLE,
    LISTEN_EVENTS_TABLE,
    TRACKS_TABLE,
    USERS_TABLE,
)
from moovitamix_assets.check_results import daily_check_spec, selected_names, to_check_result
from moovitamix_assets.checks.core_audits import (
    CoreAuditResult,
    audit_email_validity,
    audit_inactive_share,
    audit_interactions,
    audit_orphan_rate,
    audit_primary_key,
    audit_timestamps,
    newest_merged,
)
from moovitamix_assets.constants import CORE_SCHEMA
from moovitamix_assets.warehouse.database import PostgresResource

CoreAudit = Callable[[sa.Connection], CoreAuditResult]


@dataclass(frozen=True)
class CoreCheck:
    """One audit of ``core_audits`` bound to its table, as an asset check."""

    name: str
    audit: CoreAudit
    blocking: bool
    description: str


def core_asset_key(table: str) -> dg.AssetKey:
    """Key of the core asset of one table."""
    return dg.AssetKey([CORE_SCHEMA, table])


def _primary_key(table: str) -> CoreCheck:
    return CoreCheck(
        "primary_key",
        partial(audit_primary_key, table=table),
        True,
        "The primary key constraint exists and no key is duplicated or null (ERROR).",
    )


def _timestamps(table: str) -> CoreCheck:
    return CoreCheck(
        "timestamps_sane",
        partial(audit_timestamps, table=table),
        False,
        "Active records updated before created or stamped in the future are counted (WARN).",
    )


def _inactive(table: str) -> CoreCheck:
    return CoreCheck(
        "inactive_share",
        partial(audit_inactive_share, table=table),
        False,
        "At most half of the records seen in the last 30 days are no longer served (WARN).",
    )


# blocking mirrors each audit's severity (ERROR blocks); a test keeps the two in step.
CORE_CHECKS: Final[dict[str, tuple[CoreCheck, ...]]] = {
    USERS_TABLE: (
        _primary_key(USERS_TABLE),
        _timestamps(USERS_TABLE),
        CoreCheck(
            "email_validity",
            audit_email_validity,
            False,
            "At least 99% of active users have a well-formed e-mail address (WARN).",
        ),
        _inactive(USERS_TABLE),
    ),
    TRACKS_TABLE: (
        _primary_key(TRACKS_TABLE),
        _timestamps(TRACKS_TABLE),
        _inactive(TRACKS_TABLE),
    ),
    LISTEN_EVENTS_TABLE: (
        _primary_key(LISTEN_EVENTS_TABLE),
        CoreCheck(
            "orphan_rate",
            audit_orphan_rate,
            False,
            "At most 15% of active listening pairs reference an unknown user or track "
            "(ERROR, not blocking: interactions leave orphans out).",
        ),
        _inactive(LISTEN_EVENTS_TABLE),
    ),
    INTERACTIONS_TABLE: (
        _primary_key(INTERACTIONS_TABLE),
        CoreCheck(
            "valid_interactions",
            audit_interactions,
            True,
            "Every interaction has a known user and track and a positive weight (ERROR).",
        ),
    ),
}


def run_core_audits(
    engine: sa.Engine, selected: Mapping[str, Sequence[str]]
) -> list[tuple[str, CoreAuditResult]]:
    """Run the selected audits of some core tables in one read-only transaction.

    Args:
        engine: Engine of the warehouse database.
        selected: Table -> check names (see ``CORE_CHECKS``).

    Returns:
        (table, result) pairs, tables and names in the order given.
    """
    results: list[tuple[str, CoreAuditResult]] = []
    with engine.connect() as conn:
        # One consistent view of all tables: the orphan rate joins three of them.
        conn.execution_options(isolation_level="REPEATABLE READ")
        for table, names in selected.items():
            by_name = {check.name: check for check in CORE_CHECKS[table]}
            results += [(table, by_name[name].audit(conn)) for name in names]
    return results


# The interactions table is rebuilt, not merged: its state is that of the listening it reads.
_MERGED_AS: Final = {INTERACTIONS_TABLE: LISTEN_EVENTS_TABLE}


def _as_of(engine: sa.Engine, tables: Sequence[str]) -> dict[str, date | None]:
    with engine.connect() as conn:
        return {table: newest_merged(conn, _MERGED_AS.get(table, table)) for table in tables}


def build_core_checks(
    name: str, tables: Sequence[str], description: str
) -> dg.AssetChecksDefinition:
    """Build one subsettable op evaluating the checks of the given core tables."""
    specs = [
        daily_check_spec(
            check.name,
            core_asset_key(table),
            blocking=check.blocking,
            description=check.description,
        )
        for table in tables
        for check in CORE_CHECKS[table]
    ]

    @dg.multi_asset_check(name=name, specs=specs, can_subset=True, description=description)
    def _core_checks(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> Iterator[dg.AssetCheckResult]:
        """Audit the current state of core tables after the run's merge."""
        selected = {
            table: names
            for table in tables
            if (names := selected_names(context, core_asset_key(table)))
        }
        engine = postgres.engine()
        as_of = _as_of(engine, list(selected))
        for table, result in run_core_audits(engine, selected):
            newest = as_of[table]
            yield to_check_result(
                core_asset_key(table),
                result,
                {
                    "partition": context.partition_key,
                    "newest_merged_snapshot": newest.isoformat() if newest else None,
                    **result.figures,
                },
            )

    return _core_checks


core_checks: list[dg.AssetChecksDefinition] = [
    build_core_checks(
        "core_entity_checks",
        (USERS_TABLE, TRACKS_TABLE),
        "Keys, timestamps, e-mails and churn of core.users and core.tracks.",
    ),
    build_core_checks(
        "core_listen_events_checks",
        (LISTEN_EVENTS_TABLE,),
        "Keys, referential integrity and churn of core.listen_events.",
    ),
    build_core_checks(
        "core_interactions_checks",
        (INTERACTIONS_TABLE,),
        "Keys and usability of core.user_track_interactions, the models' input.",
    ),
]
