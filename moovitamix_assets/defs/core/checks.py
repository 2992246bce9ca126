"""Asset checks of the core tables, judged after each merge on the state it left.

What the next step relies on (unique keys, usable interactions) is ERROR and blocks; the source's
data quality is WARN. The orphan rate is ERROR but does not block: the interactions leave orphans
out. Three subsettable ops, so that blocking works without a cycle (a blocking check must finish
before its asset's downstream starts, an op runs after every asset it checks): core/users and
core/tracks, both upstream of core/listen_events, share one.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final, NamedTuple

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
    newest_merged,
)
from moovitamix_assets.warehouse.database import PostgresResource, quote_ident

# Share of the active listening pairs whose user or track is unknown to core. About 6% is normal
# on the first day (listens of tracks the API removed before our first snapshot), shrinking
# afterwards; well over twice that means the catalogue and the listening are out of step.
MAX_ORPHAN_RATE: Final = 0.15
# Share of active users whose e-mail looks like an address; the contract promises e-mails.
MIN_EMAIL_VALID_RATE: Final = 0.99
# Share of the records seen in the last window that the newest snapshot no longer lists. Normal
# churn (1% of users a day) gives about 23% over 30 days; half means the API dropped records.
MAX_INACTIVE_SHARE: Final = 0.5
INACTIVE_WINDOW_DAYS: Final = 30
# Deliberately loose: one @, no blanks, a dot in the domain. Deliverability is not our concern.
EMAIL_PATTERN: Final = r"^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$"


class CoreAuditResult(NamedTuple):
    """The outcome of one audit of one core table: the audit finds the first four fields,
    ``run_core_audits`` adds those of its check."""

    passed: bool
    observed: float | int | None
    description: str
    figures: dict[str, int | float] = {}
    name: str = ""
    table: str = ""
    severity: Severity = "ERROR"
    blocking: bool = True
    threshold: float | None = None


def _exists(conn: sa.Connection, *tables: str) -> bool:
    return all(
        conn.execute(
            sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{CORE_SCHEMA}.{table}"}
        ).scalar_one()
        for table in tables
    )


def _row(conn: sa.Connection, name: str, table: str = "", **params: object) -> dict[str, int]:
    """The one row of ``sql/<name>.sql``, its ``{table}`` replaced by ``core.<table>``."""
    row = conn.execute(load_sql(name, table), params).mappings().one()
    return {k: int(v) for k, v in row.items()}


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def audit_primary_key(conn: sa.Connection, table: str, limit: int) -> CoreAuditResult:
    """The primary key constraint exists and no key is duplicated or null (ERROR)."""
    # A restored dump may lack the constraint; for a view, it is that of the table storing its rows.
    keys = ("id",) if table in (USERS_TABLE, TRACKS_TABLE) else ("user_id", "track_id")
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
    rows, null_keys, duplicates = (
        int(v or 0)
        for v in conn.execute(
            sa.text(
                f"SELECT sum(n), sum(n) FILTER (WHERE has_null), sum(n - 1) FROM ("
                f"SELECT count(*) AS n, bool_or({any_null}) AS has_null "
                f"FROM {core_table(table)} GROUP BY {key_list}) k"
            )
        ).one()
    )
    has_constraint = tuple(constraint or ()) == keys
    description = f"{duplicates} duplicated and {null_keys} null key(s) in {rows} rows"
    if not has_constraint:
        found = ", ".join(constraint or ()) or "none"
        missing = f"primary key constraint on ({', '.join(keys)}) missing (found: {found})"
        description = f"{missing}; {description}"
    violations = duplicates + null_keys
    figures = {"rows": rows, "duplicate_keys": duplicates, "null_keys": null_keys}
    figures["has_constraint"] = int(has_constraint)
    return CoreAuditResult(has_constraint and violations <= limit, violations, description, figures)


def audit_orphan_rate(conn: sa.Connection, table: str, max_rate: float) -> CoreAuditResult:
    """At most 15% of active listening pairs reference an unknown user or track (ERROR, not
    blocking: interactions leave orphans out)."""
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
    return CoreAuditResult(
        rate <= max_rate and not row["stale_reference_flags"], rate, description, row
    )


def audit_timestamps(conn: sa.Connection, table: str, max_odd: int) -> CoreAuditResult:
    """Active records updated before created or stamped in the future are counted (WARN)."""
    as_of = newest_merged(conn, table)
    horizon = as_of + timedelta(days=1) if as_of is not None else None
    row = _row(conn, "audit_timestamps", table, horizon=horizon)
    odd = row.pop("odd")
    description = (
        f"{odd} of {row['active_records']} active records have odd timestamps: "
        f"{row['updated_before_created']} updated before created, {row['future_timestamps']} "
        f"stamped after {as_of.isoformat() if as_of else 'the newest snapshot'} (UTC)"
    )
    return CoreAuditResult(odd <= max_odd, odd, description, row)


def audit_email_validity(conn: sa.Connection, table: str, min_rate: float) -> CoreAuditResult:
    """At least 99% of active users have a well-formed e-mail address (WARN)."""
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
    return CoreAuditResult(rate >= min_rate, rate, description, figures)


def audit_inactive_share(
    conn: sa.Connection,
    table: str,
    max_share: float = MAX_INACTIVE_SHARE,
    window_days: int = INACTIVE_WINDOW_DAYS,
) -> CoreAuditResult:
    """At most half of the records seen in the last 30 days are no longer served (WARN)."""
    # Only the window counts: the tables keep every record ever seen, so the all-time share grows
    # with normal churn and says nothing about today.
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
    return CoreAuditResult(share <= max_share, share, description, row)


def audit_interactions(conn: sa.Connection, table: str, limit: int) -> CoreAuditResult:
    """Every interaction has a known user and track and a positive weight (ERROR)."""
    row = _row(conn, "audit_interactions")
    invalid = row.pop("invalid")
    description = (
        f"{invalid} of {row['rows']} interactions unusable: {row['unknown_references']} with an "
        f"unknown user or track, {row['bad_weights']} with a weight that is not a positive number"
    )
    return CoreAuditResult(invalid <= limit, invalid, description, row)


@dataclass(frozen=True)
class CoreCheck:
    """One audit of a core table as an asset check (its docstring is the check's description)."""

    name: str
    severity: Severity
    blocking: bool
    threshold: float
    audit: Callable[[sa.Connection, str, float], CoreAuditResult]
    reads: tuple[str, ...] = ()  # the other tables the audit joins

    @property
    def description(self) -> str:
        return " ".join(str(self.audit.__doc__).split())


_PRIMARY_KEY = CoreCheck("primary_key", "ERROR", True, 0, audit_primary_key)
_TIMESTAMPS = CoreCheck("timestamps_sane", "WARN", False, 0, audit_timestamps)
_INACTIVE = CoreCheck("inactive_share", "WARN", False, MAX_INACTIVE_SHARE, audit_inactive_share)
_CATALOGUE = (USERS_TABLE, TRACKS_TABLE)
CORE_CHECKS: Final[dict[str, tuple[CoreCheck, ...]]] = {
    USERS_TABLE: (
        _PRIMARY_KEY,
        _TIMESTAMPS,
        CoreCheck("email_validity", "WARN", False, MIN_EMAIL_VALID_RATE, audit_email_validity),
        _INACTIVE,
    ),
    TRACKS_TABLE: (_PRIMARY_KEY, _TIMESTAMPS, _INACTIVE),
    LISTEN_EVENTS_TABLE: (
        _PRIMARY_KEY,
        CoreCheck("orphan_rate", "ERROR", False, MAX_ORPHAN_RATE, audit_orphan_rate, _CATALOGUE),
        _INACTIVE,
    ),
    INTERACTIONS_TABLE: (
        _PRIMARY_KEY,
        CoreCheck("valid_interactions", "ERROR", True, 0, audit_interactions, _CATALOGUE),
    ),
}


def run_core_audits(
    engine: sa.Engine, selected: Mapping[str, Sequence[str]]
) -> list[tuple[str, CoreAuditResult]]:
    """Run the selected audits (table -> check names) in one read-only transaction, in order."""
    results: list[tuple[str, CoreAuditResult]] = []
    with engine.connect() as conn:
        # One consistent view of all tables: the orphan rate joins three of them.
        conn.execution_options(isolation_level="REPEATABLE READ")
        for table, names in selected.items():
            by_name = {check.name: check for check in CORE_CHECKS[table]}
            for check in map(by_name.__getitem__, names):
                if _exists(conn, table, *check.reads):
                    found = check.audit(conn, table, check.threshold)
                else:
                    missing = f"table {CORE_SCHEMA}.{table} does not exist: the merge never ran"
                    found = CoreAuditResult(False, None, missing)
                result = found._replace(
                    name=check.name,
                    table=table,
                    severity=check.severity,
                    blocking=check.blocking,
                    threshold=check.threshold,
                )
                results.append((table, result))
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
            logged = _exists(conn, MERGE_LOG_TABLE)
            as_of = {
                t: newest_merged(conn, _MERGED_AS.get(t, t)) if logged else None for t in selected
            }
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
