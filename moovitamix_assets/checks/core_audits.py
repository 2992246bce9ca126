"""Audits of the ``core`` tables: pure functions over a connection, judged after each merge.

Core tables hold the *current* state (every merge brings them up to date), so these audits judge
that state, whichever partition's run left it: keys, referential integrity of listening, and the
quality signals the merge counts but never filters (odd timestamps, e-mails, churn).

Severities: what the next step relies on (unique keys, usable interactions) is ``ERROR`` and
blocks; signals about the source's data quality are ``WARN`` only. The orphan rate sits between:
``ERROR`` (someone must look today) but not blocking, because the interactions rebuild already
leaves orphans out, so stopping it would only withhold a correct, slightly smaller table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final

import sqlalchemy as sa

from moovitamix_assets.assets.core.schema import (
    INTERACTIONS_TABLE,
    LISTEN_EVENTS_TABLE,
    MERGE_LOG_TABLE,
    STORAGE_TABLES,
    TRACKS_TABLE,
    USERS_TABLE,
    core_table,
)
from moovitamix_assets.check_results import Severity
from moovitamix_assets.constants import CORE_SCHEMA
from moovitamix_assets.warehouse.database import quote_ident

# Share of the active listening pairs whose user or track is unknown to core. About 6% is normal
# on the first day (listens of tracks the API removed before our first snapshot; 5-9% on small
# catalogues) and it only shrinks afterwards as those histories age out. Well over twice that
# means the catalogue and the listening are out of step.
DEFAULT_MAX_ORPHAN_RATE: Final = 0.15
# Share of active users whose e-mail looks like an address; the contract promises e-mails.
DEFAULT_MIN_EMAIL_VALID_RATE: Final = 0.99
# Share of the records seen in the last window that the newest snapshot no longer lists. Normal
# churn (1% of users a day) gives about 23% over 30 days; half means the API dropped records.
DEFAULT_MAX_INACTIVE_SHARE: Final = 0.5
INACTIVE_WINDOW_DAYS: Final = 30
# Rows with timestamps out of order or in the future tolerated before the check warns.
DEFAULT_MAX_ODD_TIMESTAMPS: Final = 0

# Deliberately loose: one @, no blanks, a dot in the domain. Deliverability is not our concern.
EMAIL_PATTERN: Final = r"^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$"

PRIMARY_KEYS: Final[dict[str, tuple[str, ...]]] = {
    USERS_TABLE: ("id",),
    TRACKS_TABLE: ("id",),
    LISTEN_EVENTS_TABLE: ("user_id", "track_id"),
    INTERACTIONS_TABLE: ("user_id", "track_id"),
}

q = quote_ident


@dataclass(frozen=True)
class CoreAuditResult:
    """The outcome of one audit of one core table."""

    name: str
    table: str
    passed: bool
    observed: float | int | str | None
    threshold: float | int | str | None
    severity: Severity
    blocking: bool
    description: str
    figures: dict[str, int | float] = field(default_factory=dict)


def _result(
    name: str,
    table: str,
    *,
    passed: bool,
    observed: float | int | str | None,
    threshold: float | int | str | None,
    description: str,
    severity: Severity,
    figures: dict[str, int | float] | None = None,
    blocking: bool | None = None,
) -> CoreAuditResult:
    return CoreAuditResult(
        name=name,
        table=table,
        passed=passed,
        observed=observed,
        threshold=threshold,
        severity=severity,
        blocking=severity == "ERROR" if blocking is None else blocking,
        description=description,
        figures=figures or {},
    )


def _check_table(table: str) -> None:
    if table not in PRIMARY_KEYS:
        raise ValueError(f"unknown core table {table!r}")


def _exists(conn: sa.Connection, table: str) -> bool:
    return conn.execute(
        sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{CORE_SCHEMA}.{table}"}
    ).scalar_one()


def _missing(
    name: str,
    table: str,
    threshold: float | int | None,
    severity: Severity,
    blocking: bool | None = None,
) -> CoreAuditResult:
    return _result(
        name,
        table,
        passed=False,
        observed=None,
        threshold=threshold,
        description=f"table {CORE_SCHEMA}.{table} does not exist: the merge never ran",
        severity=severity,
        blocking=blocking,
    )


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
    dump or a hand-made table may lack it) and counts what a missing one let through. For a view
    (``core.listen_events``) it is the key of the table that stores its rows.
    """
    _check_table(table)
    name = "primary_key"
    storage = STORAGE_TABLES.get(table, table)
    if not _exists(conn, storage):
        return _missing(name, table, 0, "ERROR")
    keys = PRIMARY_KEYS[table]
    key_list = ", ".join(q(k) for k in keys)
    any_null = " OR ".join(f"{q(k)} IS NULL" for k in keys)
    target = core_table(storage)
    constraint = conn.execute(
        sa.text(
            """
            SELECT array_agg(a.attname::text ORDER BY array_position(c.conkey, a.attnum))
            FROM pg_constraint c
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
            WHERE c.conrelid = to_regclass(:name) AND c.contype = 'p'
            """
        ),
        {"name": f"{CORE_SCHEMA}.{storage}"},
    ).scalar_one()
    rows, null_keys = conn.execute(
        sa.text(f"SELECT count(*), count(*) FILTER (WHERE {any_null}) FROM {target}")
    ).one()
    duplicates = conn.execute(
        sa.text(
            f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM {target} "
            f"GROUP BY {key_list} HAVING count(*) > 1) d"
        )
    ).scalar_one()
    has_constraint = tuple(constraint or ()) == keys
    violations = int(duplicates) + int(null_keys)
    problems = []
    if not has_constraint:
        found = ", ".join(constraint) if constraint else "none"
        problems.append(f"primary key constraint on ({', '.join(keys)}) missing (found: {found})")
    problems.append(
        f"{int(duplicates)} duplicated and {int(null_keys)} null key(s) in {int(rows)} rows"
    )
    return _result(
        name,
        table,
        passed=has_constraint and violations == 0,
        observed=violations,
        threshold=0,
        description="; ".join(problems),
        severity="ERROR",
        figures={
            "rows": int(rows),
            "duplicate_keys": int(duplicates),
            "null_keys": int(null_keys),
            "has_constraint": int(has_constraint),
        },
    )


def audit_orphan_rate(
    conn: sa.Connection, max_rate: float = DEFAULT_MAX_ORPHAN_RATE
) -> CoreAuditResult:
    """Few active listening pairs reference a user or track core does not know, flags are right.

    The references are recomputed against ``core.users``/``core.tracks`` rather than read from
    the ``user_known``/``track_known`` flags, and a flag that disagrees fails the check too: the
    interactions rebuild trusts those flags.
    """
    name = "orphan_rate"
    table = LISTEN_EVENTS_TABLE
    if not all(_exists(conn, t) for t in (table, USERS_TABLE, TRACKS_TABLE)):
        return _missing(name, table, max_rate, "ERROR", blocking=False)
    row = conn.execute(
        sa.text(
            f"""
            SELECT count(*) AS pairs,
                   count(*) FILTER (WHERE u.id IS NULL) AS unknown_user,
                   count(*) FILTER (WHERE k.id IS NULL) AS unknown_track,
                   count(*) FILTER (WHERE u.id IS NULL OR k.id IS NULL) AS orphans,
                   count(*) FILTER (WHERE e.user_known <> (u.id IS NOT NULL)
                                       OR e.track_known <> (k.id IS NOT NULL)) AS stale_flags
            FROM {core_table(table)} e
            LEFT JOIN {core_table(USERS_TABLE)} u ON u.id = e.user_id
            LEFT JOIN {core_table(TRACKS_TABLE)} k ON k.id = e.track_id
            WHERE e.is_active
            """
        )
    ).one()
    rate = _rate(row.orphans, row.pairs)
    stale = int(row.stale_flags)
    description = (
        f"{row.orphans} of {row.pairs} active pairs are orphans ({rate:.2%}, at most "
        f"{max_rate:.0%} allowed): {row.unknown_user} with an unknown user, "
        f"{row.unknown_track} with an unknown track"
    )
    if stale:
        description += f"; {stale} pair(s) carry a user_known/track_known flag that is wrong"
    return _result(
        name,
        table,
        passed=rate <= max_rate and stale == 0,
        observed=rate,
        threshold=max_rate,
        description=description,
        severity="ERROR",
        blocking=False,
        figures={
            "active_pairs": int(row.pairs),
            "orphan_pairs": int(row.orphans),
            "unknown_user_pairs": int(row.unknown_user),
            "unknown_track_pairs": int(row.unknown_track),
            "stale_reference_flags": stale,
        },
    )


def audit_timestamps(
    conn: sa.Connection, table: str, max_odd: int = DEFAULT_MAX_ODD_TIMESTAMPS
) -> CoreAuditResult:
    """Active records with ``updated_at`` before ``created_at``, or after their snapshot day, are
    counted (a warning: the records are loaded as served)."""
    if table not in (USERS_TABLE, TRACKS_TABLE):
        raise ValueError(f"core.{table} has no record timestamps")
    name = "timestamps_sane"
    if not _exists(conn, table):
        return _missing(name, table, max_odd, "WARN")
    as_of = newest_merged(conn, table)
    # A record stamped after the end of the newest snapshot's day came from a wrong clock.
    horizon = as_of + timedelta(days=1) if as_of is not None else None
    row = conn.execute(
        sa.text(
            f"""
            SELECT count(*) AS active,
                   count(*) FILTER (WHERE updated_at < created_at) AS out_of_order,
                   count(*) FILTER (WHERE CAST(:horizon AS date) IS NOT NULL
                       AND greatest(created_at, updated_at) >= CAST(:horizon AS date))
                       AS in_future,
                   count(*) FILTER (WHERE updated_at < created_at
                       OR (CAST(:horizon AS date) IS NOT NULL
                           AND greatest(created_at, updated_at) >= CAST(:horizon AS date)))
                       AS odd
            FROM {core_table(table)} WHERE is_active
            """
        ),
        {"horizon": horizon},
    ).one()
    return _result(
        name,
        table,
        passed=int(row.odd) <= max_odd,
        observed=int(row.odd),
        threshold=max_odd,
        description=(
            f"{row.odd} of {row.active} active records have odd timestamps: "
            f"{row.out_of_order} updated before created, {row.in_future} stamped after "
            f"{as_of.isoformat() if as_of else 'the newest snapshot'} (UTC)"
        ),
        severity="WARN",
        figures={
            "active_records": int(row.active),
            "updated_before_created": int(row.out_of_order),
            "future_timestamps": int(row.in_future),
        },
    )


def audit_email_validity(
    conn: sa.Connection, min_rate: float = DEFAULT_MIN_EMAIL_VALID_RATE
) -> CoreAuditResult:
    """Nearly all active users have an e-mail shaped like an address (a warning)."""
    name = "email_validity"
    table = USERS_TABLE
    if not _exists(conn, table):
        return _missing(name, table, min_rate, "WARN")
    active, valid = conn.execute(
        sa.text(
            f"SELECT count(*), count(*) FILTER (WHERE email ~ :pattern) "
            f"FROM {core_table(table)} WHERE is_active"
        ),
        {"pattern": EMAIL_PATTERN},
    ).one()
    # An empty table has nothing invalid in it.
    rate = round(valid / active, 6) if active else 1.0
    return _result(
        name,
        table,
        passed=rate >= min_rate,
        observed=rate,
        threshold=min_rate,
        description=(
            f"{valid} of {active} active users have a well-formed e-mail ({rate:.2%}, at least "
            f"{min_rate:.0%} expected)"
        ),
        severity="WARN",
        figures={"active_users": int(active), "invalid_emails": int(active - valid)},
    )


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
    if table not in (USERS_TABLE, TRACKS_TABLE, LISTEN_EVENTS_TABLE):
        raise ValueError(f"core.{table} has no activity flag")
    name = "inactive_share"
    if not _exists(conn, table):
        return _missing(name, table, max_share, "WARN")
    as_of = newest_merged(conn, table)
    since = as_of - timedelta(days=window_days) if as_of is not None else None
    recent, inactive, total_inactive = conn.execute(
        sa.text(
            f"""
            SELECT count(*) FILTER (WHERE last_seen > CAST(:since AS date)),
                   count(*) FILTER (WHERE last_seen > CAST(:since AS date) AND NOT is_active),
                   count(*) FILTER (WHERE NOT is_active)
            FROM {core_table(table)}
            """
        ),
        {"since": since or date.min},
    ).one()
    share = _rate(inactive, recent)
    return _result(
        name,
        table,
        passed=share <= max_share,
        observed=share,
        threshold=max_share,
        description=(
            f"{inactive} of the {recent} records seen in the {window_days} days up to "
            f"{as_of.isoformat() if as_of else 'now'} are no longer served ({share:.1%}, at most "
            f"{max_share:.0%} expected); {total_inactive} inactive in all"
        ),
        severity="WARN",
        figures={
            "recent_records": int(recent),
            "recent_inactive": int(inactive),
            "inactive_records": int(total_inactive),
        },
    )


def audit_interactions(conn: sa.Connection) -> CoreAuditResult:
    """Every interaction has a known user and track and a finite, positive weight.

    This table is the model layer's only input: an orphan or a NaN weight there would train on
    data that cannot be recommended or would poison the factorisation.
    """
    name = "valid_interactions"
    table = INTERACTIONS_TABLE
    if not all(_exists(conn, t) for t in (table, USERS_TABLE, TRACKS_TABLE)):
        return _missing(name, table, 0, "ERROR")
    row = conn.execute(
        sa.text(
            f"""
            SELECT count(*) AS rows,
                   count(*) FILTER (WHERE u.id IS NULL OR k.id IS NULL) AS unknown_refs,
                   count(*) FILTER (WHERE NOT (i.weight > 0)
                       OR i.weight IN ('NaN'::float8, 'Infinity'::float8)) AS bad_weights,
                   count(*) FILTER (WHERE u.id IS NULL OR k.id IS NULL OR NOT (i.weight > 0)
                       OR i.weight IN ('NaN'::float8, 'Infinity'::float8)) AS invalid
            FROM {core_table(table)} i
            LEFT JOIN {core_table(USERS_TABLE)} u ON u.id = i.user_id
            LEFT JOIN {core_table(TRACKS_TABLE)} k ON k.id = i.track_id
            """
        )
    ).one()
    return _result(
        name,
        table,
        passed=int(row.invalid) == 0,
        observed=int(row.invalid),
        threshold=0,
        description=(
            f"{row.invalid} of {row.rows} interactions unusable: {row.unknown_refs} with an "
            f"unknown user or track, {row.bad_weights} with a weight that is not a positive number"
        ),
        severity="ERROR",
        figures={
            "rows": int(row.rows),
            "unknown_references": int(row.unknown_refs),
            "bad_weights": int(row.bad_weights),
        },
    )
