"""Asset checks of the core tables, judged after each merge on the state it left.

Severities: what the next step relies on (unique keys, usable interactions) is ``ERROR`` and
blocks; signals about the source's data quality are ``WARN``. The orphan rate is ``ERROR`` (someone
must look today) but not blocking: the interactions already leave orphans out.

Three ops, so that blocking works without a cycle: a blocking check must finish before the assets
downstream of its asset start, and an op runs only after every asset it checks. ``core/users`` and
``core/tracks`` share one op (both are upstream of ``core/listen_events``); the two others have one
each. Every op is subsettable: selecting one asset runs only that asset's checks.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial
from typing import Final

import dagster as dg
import sqlalchemy as sa

from moovitamix_assets.check_results import (
    Severity,
    daily_check_spec,
    selected_names,
    to_check_result,
)
from moovitamix_assets.constants import CORE_SCHEMA
from moovitamix_assets.defs.core.assets import (
    INTERACTIONS_TABLE,
    LISTEN_EVENTS_TABLE,
    MERGE_LOG_TABLE,
    STORAGE_TABLES,
    TRACKS_TABLE,
    USERS_TABLE,
    core_table,
    load_sql,
)
from moovitamix_assets.warehouse.database import PostgresResource, quote_ident

# Share of the active listening pairs whose user or track is unknown to core. About 6% is normal
# on the first day (listens of tracks the API removed before our first snapshot) and it shrinks
# afterwards as those histories age out; well over twice that means the catalogue and the
# listening are out of step.
DEFAULT_MAX_ORPHAN_RATE: Final = 0.15
# Share of active users whose e-mail looks like an address; the contract promises e-mails.
DEFAULT_MIN_EMAIL_VALID_RATE: Final = 0.99
# Share of the records seen in the last window that the newest snapshot no longer lists. Normal
# churn (1% of users a day) gives about 23% over 30 days; half means the API dropped records.
DEFAULT_MAX_INACTIVE_SHARE: Final = 0.5
INACTIVE_WINDOW_DAYS: Final = 30
# Deliberately loose: one @, no blanks, a dot in the domain. Deliverability is not our concern.
EMAIL_PATTERN: Final = r"^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$"

PRIMARY_KEYS: Final[dict[str, tuple[str, ...]]] = {
    USERS_TABLE: ("id",),
    TRACKS_TABLE: ("id",),
    LISTEN_EVENTS_TABLE: ("user_id", "track_id"),
    INTERACTIONS_TABLE: ("user_id", "track_id"),
}


@dataclass(frozen=True)
class CoreAuditResult:
    """The outcome of one audit of one core table."""

    name: str
    table: str
    severity: Severity
    blocking: bool
    passed: bool
    observed: float | int | str | None
    threshold: float | int | str | None
    description: str
    figures: dict[str, int | float] = field(default_factory=dict)


def _exists(conn: sa.Connection, *tables: str) -> bool:
    return all(
        conn.execute(
            sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{CORE_SCHEMA}.{table}"}
        ).scalar_one()
        for table in tables
    )


def _missing(
    name: str, table: str, threshold: float | int, severity: Severity, blocking: bool
) -> CoreAuditResult:
    description = f"table {CORE_SCHEMA}.{table} does not exist: the merge never ran"
    return CoreAuditResult(name, table, severity, blocking, False, None, threshold, description)


def _row(conn: sa.Connection, name: str, table: str = "", **params: object) -> dict[str, int]:
    """The one row of ``sql/<name>.sql``, its ``{table}`` replaced by ``core.<table>``."""
    row = conn.execute(load_sql(name, table), params).mappings().one()
    return {k: int(v) for k, v in row.items()}


def newest_merged(conn: sa.Connection, table: str) -> date | None:
    """The newest snapshot merged into a core table (None before the first merge)."""
    if not _exists(conn, MERGE_LOG_TABLE):
        return None
    return conn.execute(
        sa.text(
            f"SELECT max(snapshot_date) FROM {core_table(MERGE_LOG_TABLE)} WHERE table_name = :t"
        ),
        {"t": table},
    ).scalar_one()


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def audit_primary_key(conn: sa.Connection, table: str) -> CoreAuditResult:
    """The table's primary key constraint is in place and no key is duplicated or null.

    The constraint makes duplicates impossible; the audit proves it is still there (a restored
    dump or a hand-made table may lack it) and counts what a missing one let through. For a
    view it is the key of the table that stores its rows.
    """
    name, keys = "primary_key", PRIMARY_KEYS[table]
    if not _exists(conn, table):
        return _missing(name, table, 0, "ERROR", True)
    constraint = conn.execute(
        sa.text(
            "SELECT array_agg(a.attname::text ORDER BY array_position(c.conkey, a.attnum)) "
            "FROM pg_constraint c JOIN pg_attribute a "
            "ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) "
            "WHERE c.conrelid = to_regclass(:name) AND c.contype = 'p'"
        ),
        {"name": f"{CORE_SCHEMA}.{STORAGE_TABLES.get(table, table)}"},
    ).scalar_one()
    key_list = ", ".join(quote_ident(k) for k in keys)
    any_null = " OR ".join(f"{quote_ident(k)} IS NULL" for k in keys)
    rows, null_keys, duplicates = conn.execute(
        sa.text(
            f"SELECT sum(n), sum(n) FILTER (WHERE has_null), sum(n - 1) FROM ("
            f"SELECT count(*) AS n, bool_or({any_null}) AS has_null "
            f"FROM {core_table(table)} GROUP BY {key_list}) k"
        )
    ).one()
    rows, null_keys, duplicates = (int(v or 0) for v in (rows, null_keys, duplicates))
    has_constraint = tuple(constraint or ()) == keys
    problems = (
        []
        if has_constraint
        else [
            f"primary key constraint on ({', '.join(keys)}) missing "
            f"(found: {', '.join(constraint) if constraint else 'none'})"
        ]
    )
    problems.append(f"{duplicates} duplicated and {null_keys} null key(s) in {rows} rows")
    violations = duplicates + null_keys
    return CoreAuditResult(
        name,
        table,
        "ERROR",
        True,
        has_constraint and violations == 0,
        violations,
        0,
        "; ".join(problems),
        {
            "rows": rows,
            "duplicate_keys": duplicates,
            "null_keys": null_keys,
            "has_constraint": int(has_constraint),
        },
    )


def audit_orphan_rate(
    conn: sa.Connection, max_rate: float = DEFAULT_MAX_ORPHAN_RATE
) -> CoreAuditResult:
    """Few active listening pairs reference a user or track core does not know; flags are right."""
    name, table = "orphan_rate", LISTEN_EVENTS_TABLE
    if not _exists(conn, table, USERS_TABLE, TRACKS_TABLE):
        return _missing(name, table, max_rate, "ERROR", False)
    row = _row(conn, "audit_orphan_rate")
    rate = _rate(row["orphan_pairs"], row["active_pairs"])
    description = (
        f"{row['orphan_pairs']} of {row['active_pairs']} active pairs are orphans ({rate:.2%}, "
        f"at most {max_rate:.0%} allowed): {row['unknown_user_pairs']} with an unknown user, "
        f"{row['unknown_track_pairs']} with an unknown track"
    )
    if row["stale_reference_flags"]:
        description += (
            f"; {row['stale_reference_flags']} pair(s) carry a user_known/track_known flag "
            "that is wrong"
        )
    passed = rate <= max_rate and row["stale_reference_flags"] == 0
    return CoreAuditResult(name, table, "ERROR", False, passed, rate, max_rate, description, row)


def audit_timestamps(conn: sa.Connection, table: str, max_odd: int = 0) -> CoreAuditResult:
    """Active records with ``updated_at`` before ``created_at``, or after their snapshot day, are
    counted (a warning: the records are loaded as served)."""
    name = "timestamps_sane"
    if not _exists(conn, table):
        return _missing(name, table, max_odd, "WARN", False)
    as_of = newest_merged(conn, table)
    horizon = as_of + timedelta(days=1) if as_of is not None else None
    row = _row(conn, "audit_timestamps", table, horizon=horizon)
    odd = row.pop("odd")
    description = (
        f"{odd} of {row['active_records']} active records have odd timestamps: "
        f"{row['updated_before_created']} updated before created, {row['future_timestamps']} "
        f"stamped after {as_of.isoformat() if as_of else 'the newest snapshot'} (UTC)"
    )
    return CoreAuditResult(
        name, table, "WARN", False, odd <= max_odd, odd, max_odd, description, row
    )


def audit_email_validity(
    conn: sa.Connection, min_rate: float = DEFAULT_MIN_EMAIL_VALID_RATE
) -> CoreAuditResult:
    """Nearly all active users have an e-mail shaped like an address (a warning)."""
    name, table = "email_validity", USERS_TABLE
    if not _exists(conn, table):
        return _missing(name, table, min_rate, "WARN", False)
    active, valid = conn.execute(
        sa.text(
            f"SELECT count(*), count(*) FILTER (WHERE email ~ :pattern) "
            f"FROM {core_table(table)} WHERE is_active"
        ),
        {"pattern": EMAIL_PATTERN},
    ).one()
    rate = round(valid / active, 6) if active else 1.0  # an empty table has nothing invalid
    description = (
        f"{valid} of {active} active users have a well-formed e-mail ({rate:.2%}, at least "
        f"{min_rate:.0%} expected)"
    )
    figures = {"active_users": int(active), "invalid_emails": int(active - valid)}
    passed = rate >= min_rate
    return CoreAuditResult(name, table, "WARN", False, passed, rate, min_rate, description, figures)


def audit_inactive_share(
    conn: sa.Connection,
    table: str,
    max_share: float = DEFAULT_MAX_INACTIVE_SHARE,
    window_days: int = INACTIVE_WINDOW_DAYS,
) -> CoreAuditResult:
    """The share of recently seen records that the newest snapshot no longer lists is bounded.

    Only records seen within ``window_days`` of the newest snapshot count: the tables keep every
    record ever seen, so the all-time share grows with normal churn and says nothing about today.
    """
    name = "inactive_share"
    if not _exists(conn, table):
        return _missing(name, table, max_share, "WARN", False)
    as_of = newest_merged(conn, table)
    since = as_of - timedelta(days=window_days) if as_of is not None else date.min
    row = _row(conn, "audit_inactive_share", table, since=since)
    share = _rate(row["recent_inactive"], row["recent_records"])
    description = (
        f"{row['recent_inactive']} of the {row['recent_records']} records seen in the "
        f"{window_days} days up to {as_of.isoformat() if as_of else 'now'} are no longer served "
        f"({share:.1%}, at most {max_share:.0%} expected); {row['inactive_records']} inactive "
        "in all"
    )
    passed = share <= max_share
    return CoreAuditResult(name, table, "WARN", False, passed, share, max_share, description, row)


def audit_interactions(conn: sa.Connection) -> CoreAuditResult:
    """Every interaction has a known user and track and a finite, positive weight."""
    name, table = "valid_interactions", INTERACTIONS_TABLE
    if not _exists(conn, table, USERS_TABLE, TRACKS_TABLE):
        return _missing(name, table, 0, "ERROR", True)
    row = _row(conn, "audit_interactions")
    invalid = row.pop("invalid")
    description = (
        f"{invalid} of {row['rows']} interactions unusable: {row['unknown_references']} with an "
        f"unknown user or track, {row['bad_weights']} with a weight that is not a positive number"
    )
    return CoreAuditResult(name, table, "ERROR", True, invalid == 0, invalid, 0, description, row)


CoreAudit = Callable[[sa.Connection], CoreAuditResult]


@dataclass(frozen=True)
class CoreCheck:
    """One audit bound to its table, as an asset check."""

    name: str
    audit: CoreAudit
    blocking: bool
    description: str


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


def _inactive_check(table: str) -> CoreCheck:
    return CoreCheck(
        "inactive_share",
        partial(audit_inactive_share, table=table),
        False,
        "At most half of the records seen in the last 30 days are no longer served (WARN).",
    )


# blocking mirrors each audit's severity (ERROR blocks, but the orphan rate); a test keeps the
# two in step.
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
        _inactive_check(USERS_TABLE),
    ),
    TRACKS_TABLE: (
        _primary_key(TRACKS_TABLE),
        _timestamps(TRACKS_TABLE),
        _inactive_check(TRACKS_TABLE),
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
        _inactive_check(LISTEN_EVENTS_TABLE),
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


def core_asset_key(table: str) -> dg.AssetKey:
    """Key of the core asset of one table."""
    return dg.AssetKey([CORE_SCHEMA, table])


# The interactions are rebuilt, not merged: their state is that of the listening they read.
_MERGED_AS: Final = {INTERACTIONS_TABLE: LISTEN_EVENTS_TABLE}


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
        with engine.connect() as conn:
            as_of = {t: newest_merged(conn, _MERGED_AS.get(t, t)) for t in selected}
        for table, result in run_core_audits(engine, selected):
            newest = as_of[table]
            extra = {
                "partition": context.partition_key,
                "newest_merged_snapshot": newest.isoformat() if newest else None,
                **result.figures,
            }
            yield to_check_result(core_asset_key(table), result, extra)

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
