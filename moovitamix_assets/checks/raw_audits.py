"""Audits of one stored raw snapshot (endpoint, day): the "audit" step of write-audit-publish.

Each audit is a pure function over a SQLAlchemy connection that returns an :class:`AuditResult`;
:func:`audit_snapshot` runs them all. The core merge calls :func:`assert_snapshot_publishable`
inside its own transaction before touching ``core``, so a snapshot that fails a blocking audit
never reaches ``core``, whether the merge runs in the daily job or alone for an old partition. The
asset checks of the raw layer wrap these same functions.

Blocking audits have severity ``ERROR``; the volume audit is a ``WARN`` only: a catalogue that
grows or shrinks a lot is worth a look, not a reason to stop the day.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Final, Literal

import sqlalchemy as sa

from moovitamix_assets.assets.raw.snapshots import MANIFEST_TABLE
from moovitamix_assets.constants import (
    LISTEN_HISTORY_ENDPOINT,
    RAW_SCHEMA,
    SNAPSHOT_DATE_COLUMN,
    TRACKS_ENDPOINT,
    USERS_ENDPOINT,
)
from moovitamix_assets.resources.database import quote_ident

Severity = Literal["ERROR", "WARN"]

# Share of the API's records the raw layer may reject before the snapshot is unusable.
DEFAULT_MAX_REJECT_RATE: Final = 0.01
# Share of rows repeating another row's key. A few duplicates are data the API really serves (the
# merge resolves them deterministically); many mean a torn read (pages shifted while data changed).
DEFAULT_MAX_DUPLICATE_RATE: Final = 0.01
# Day-over-day change of the stored row count that deserves a look.
DEFAULT_MAX_VOLUME_CHANGE: Final = 0.5

# The key of each endpoint's records (listen_history has no id of its own).
KEY_COLUMN: Final[dict[str, str]] = {
    USERS_ENDPOINT: "id",
    TRACKS_ENDPOINT: "id",
    LISTEN_HISTORY_ENDPOINT: "user_id",
}

# Columns that must never be null in a stored snapshot (the key, or the record's timestamps).
REQUIRED_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    USERS_ENDPOINT: ("id",),
    TRACKS_ENDPOINT: ("id",),
    LISTEN_HISTORY_ENDPOINT: ("created_at", "updated_at"),
}

# Column name -> PostgreSQL type (information_schema udt_name) of each raw table: what the core
# merge reads. A change here means the merge's SQL would misread or fail.
EXPECTED_COLUMNS: Final[dict[str, dict[str, str]]] = {
    USERS_ENDPOINT: {
        SNAPSHOT_DATE_COLUMN: "date",
        "id": "int8",
        "first_name": "text",
        "last_name": "text",
        "email": "text",
        "gender": "text",
        "favorite_genres": "text",
        "created_at": "timestamptz",
        "updated_at": "timestamptz",
    },
    TRACKS_ENDPOINT: {
        SNAPSHOT_DATE_COLUMN: "date",
        "id": "int8",
        "name": "text",
        "artist": "text",
        "songwriters": "text",
        "duration": "text",
        "genres": "text",
        "album": "text",
        "created_at": "timestamptz",
        "updated_at": "timestamptz",
    },
    LISTEN_HISTORY_ENDPOINT: {
        SNAPSHOT_DATE_COLUMN: "date",
        "user_id": "int8",
        "items": "_int8",
        "created_at": "timestamptz",
        "updated_at": "timestamptz",
    },
}


@dataclass(frozen=True)
class AuditResult:
    """The outcome of one audit of one raw snapshot."""

    name: str
    endpoint: str
    snapshot_date: date
    passed: bool
    observed: float | int | str | None
    threshold: float | int | str | None
    severity: Severity
    blocking: bool
    description: str


@dataclass(frozen=True)
class _Manifest:
    api_total: int
    rows_valid: int
    rows_rejected: int
    extra_fields: list[str]
    missing_fields: list[str]


class SnapshotAuditError(RuntimeError):
    """A raw snapshot failed a blocking audit: it must not be published to ``core``."""

    def __init__(self, endpoint: str, snapshot_date: date, failures: list[AuditResult]) -> None:
        self.endpoint = endpoint
        self.snapshot_date = snapshot_date
        self.failures = failures
        detail = "; ".join(f"{f.name}: {f.description}" for f in failures)
        super().__init__(
            f"raw snapshot {RAW_SCHEMA}.{endpoint} of {snapshot_date.isoformat()} failed "
            f"{len(failures)} blocking audit(s), core was not modified: {detail}"
        )


def _check_endpoint(endpoint: str) -> None:
    if endpoint not in EXPECTED_COLUMNS:
        raise ValueError(f"unknown MooVitamix endpoint {endpoint!r}")


def _table(endpoint: str) -> str:
    return f"{quote_ident(RAW_SCHEMA)}.{quote_ident(endpoint)}"


def _table_exists(conn: sa.Connection, table: str) -> bool:
    return conn.execute(
        sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{RAW_SCHEMA}.{table}"}
    ).scalar_one()


def _manifest(conn: sa.Connection, endpoint: str, snapshot_date: date) -> _Manifest | None:
    if not _table_exists(conn, MANIFEST_TABLE):
        return None
    row = conn.execute(
        sa.text(
            f"SELECT api_total, rows_valid, rows_rejected, extra_fields, missing_fields "
            f"FROM {quote_ident(RAW_SCHEMA)}.{quote_ident(MANIFEST_TABLE)} "
            f"WHERE endpoint = :endpoint AND {quote_ident(SNAPSHOT_DATE_COLUMN)} = :day"
        ),
        {"endpoint": endpoint, "day": snapshot_date},
    ).one_or_none()
    if row is None:
        return None
    return _Manifest(
        api_total=int(row.api_total),
        rows_valid=int(row.rows_valid),
        rows_rejected=int(row.rows_rejected),
        extra_fields=list(row.extra_fields or []),
        missing_fields=list(row.missing_fields or []),
    )


def stored_rows(conn: sa.Connection, endpoint: str, snapshot_date: date) -> int:
    """Rows of one day in a raw table (0 when the table does not exist)."""
    _check_endpoint(endpoint)
    if not _table_exists(conn, endpoint):
        return 0
    return conn.execute(
        sa.text(
            f"SELECT count(*) FROM {_table(endpoint)} "
            f"WHERE {quote_ident(SNAPSHOT_DATE_COLUMN)} = :day"
        ),
        {"day": snapshot_date},
    ).scalar_one()


def _no_manifest(endpoint: str, snapshot_date: date) -> str:
    return f"no manifest row for {endpoint} on {snapshot_date}: the read did not finish"


def _result(
    name: str,
    endpoint: str,
    snapshot_date: date,
    *,
    passed: bool,
    observed: float | int | str | None,
    threshold: float | int | str | None,
    description: str,
    severity: Severity = "ERROR",
) -> AuditResult:
    return AuditResult(
        name=name,
        endpoint=endpoint,
        snapshot_date=snapshot_date,
        passed=passed,
        observed=observed,
        threshold=threshold,
        severity=severity,
        blocking=severity == "ERROR",
        description=description,
    )


def audit_completeness(conn: sa.Connection, endpoint: str, snapshot_date: date) -> AuditResult:
    """Every record the API announced is stored or rejected, and the stored count is the read's.

    The raw layer keeps a record the contract cannot type in ``raw.rejects`` rather than in the
    table, so the API's ``total`` is compared with stored + rejected; the reject audit judges how
    many were rejected. A snapshot without a manifest row was not written by a complete read.
    """
    _check_endpoint(endpoint)
    name = "completeness"
    manifest = _manifest(conn, endpoint, snapshot_date)
    stored = stored_rows(conn, endpoint, snapshot_date)
    if manifest is None:
        return _result(
            name,
            endpoint,
            snapshot_date,
            passed=False,
            observed=stored,
            threshold=None,
            description=_no_manifest(endpoint, snapshot_date),
        )
    accounted = stored + manifest.rows_rejected
    passed = accounted == manifest.api_total and stored == manifest.rows_valid
    return _result(
        name,
        endpoint,
        snapshot_date,
        passed=passed,
        observed=accounted,
        threshold=manifest.api_total,
        description=(
            f"{stored} stored + {manifest.rows_rejected} rejected rows vs the API's total of "
            f"{manifest.api_total} (the read stored {manifest.rows_valid})"
        ),
    )


def audit_unique_keys(
    conn: sa.Connection,
    endpoint: str,
    snapshot_date: date,
    max_duplicate_rate: float = DEFAULT_MAX_DUPLICATE_RATE,
) -> AuditResult:
    """Rows repeating another row's key (``id``; non-null ``user_id`` for listen_history) are rare.

    A duplicate the API really serves is resolved by the merge (latest ``updated_at`` wins) and
    counted there; a duplicate rate above the threshold means pages overlapped during the read.
    """
    _check_endpoint(endpoint)
    name = "unique_keys"
    key = quote_ident(KEY_COLUMN[endpoint])
    if not _table_exists(conn, endpoint):
        return _result(
            name,
            endpoint,
            snapshot_date,
            passed=False,
            observed=None,
            threshold=max_duplicate_rate,
            description=f"table {RAW_SCHEMA}.{endpoint} does not exist",
        )
    keyed, distinct = conn.execute(
        sa.text(
            f"SELECT count({key}), count(DISTINCT {key}) FROM {_table(endpoint)} "
            f"WHERE {quote_ident(SNAPSHOT_DATE_COLUMN)} = :day"
        ),
        {"day": snapshot_date},
    ).one()
    duplicates = int(keyed - distinct)
    rate = duplicates / keyed if keyed else 0.0
    return _result(
        name,
        endpoint,
        snapshot_date,
        passed=rate <= max_duplicate_rate,
        observed=duplicates,
        threshold=max_duplicate_rate,
        description=f"{duplicates} of {keyed} rows repeat another row's {KEY_COLUMN[endpoint]} "
        f"({rate:.2%}, at most {max_duplicate_rate:.2%} allowed)",
    )


def audit_required_fields(conn: sa.Connection, endpoint: str, snapshot_date: date) -> AuditResult:
    """The columns the merge keys or orders by are never null."""
    _check_endpoint(endpoint)
    name = "required_fields"
    columns = REQUIRED_COLUMNS[endpoint]
    if not _table_exists(conn, endpoint):
        return _result(
            name,
            endpoint,
            snapshot_date,
            passed=False,
            observed=None,
            threshold=0,
            description=f"table {RAW_SCHEMA}.{endpoint} does not exist",
        )
    counts = ", ".join(f"count(*) FILTER (WHERE {quote_ident(c)} IS NULL)" for c in columns)
    row = conn.execute(
        sa.text(
            f"SELECT {counts} FROM {_table(endpoint)} "
            f"WHERE {quote_ident(SNAPSHOT_DATE_COLUMN)} = :day"
        ),
        {"day": snapshot_date},
    ).one()
    nulls = dict(zip(columns, (int(v) for v in row), strict=True))
    total = sum(nulls.values())
    detail = ", ".join(f"{c}: {n}" for c, n in nulls.items())
    return _result(
        name,
        endpoint,
        snapshot_date,
        passed=total == 0,
        observed=total,
        threshold=0,
        description=f"null values in required columns ({detail})",
    )


def audit_schema_drift(conn: sa.Connection, endpoint: str, snapshot_date: date) -> AuditResult:
    """The API served exactly the contract's fields and the raw table has the expected columns."""
    _check_endpoint(endpoint)
    name = "schema_drift"
    problems: list[str] = []
    manifest = _manifest(conn, endpoint, snapshot_date)
    if manifest is None:
        problems.append("no manifest row (the read did not finish)")
    else:
        if manifest.extra_fields:
            problems.append(f"fields not in the contract: {', '.join(manifest.extra_fields)}")
        if manifest.missing_fields:
            problems.append(f"contract fields missing: {', '.join(manifest.missing_fields)}")
    actual = dict(
        conn.execute(
            sa.text(
                "SELECT column_name, udt_name FROM information_schema.columns "
                "WHERE table_schema = :schema AND table_name = :table"
            ),
            {"schema": RAW_SCHEMA, "table": endpoint},
        ).all()
    )
    expected = EXPECTED_COLUMNS[endpoint]
    if not actual:
        problems.append(f"table {RAW_SCHEMA}.{endpoint} does not exist")
    else:
        if missing := sorted(set(expected) - set(actual)):
            problems.append(f"table lacks columns {', '.join(missing)}")
        if extra := sorted(set(actual) - set(expected)):
            problems.append(f"table has unexpected columns {', '.join(extra)}")
        if retyped := sorted(
            f"{c} is {actual[c]} not {t}"
            for c, t in expected.items()
            if c in actual and actual[c] != t
        ):
            problems.append("; ".join(retyped))
    return _result(
        name,
        endpoint,
        snapshot_date,
        passed=not problems,
        observed=len(problems),
        threshold=0,
        description="; ".join(problems) or "records and table match the contract",
    )


def audit_reject_rate(
    conn: sa.Connection,
    endpoint: str,
    snapshot_date: date,
    max_reject_rate: float = DEFAULT_MAX_REJECT_RATE,
) -> AuditResult:
    """The share of API records the raw layer rejected is at most the threshold."""
    _check_endpoint(endpoint)
    name = "reject_rate"
    manifest = _manifest(conn, endpoint, snapshot_date)
    if manifest is None:
        return _result(
            name,
            endpoint,
            snapshot_date,
            passed=False,
            observed=None,
            threshold=max_reject_rate,
            description=_no_manifest(endpoint, snapshot_date),
        )
    rate = manifest.rows_rejected / manifest.api_total if manifest.api_total else 0.0
    return _result(
        name,
        endpoint,
        snapshot_date,
        passed=rate <= max_reject_rate,
        observed=round(rate, 6),
        threshold=max_reject_rate,
        description=(
            f"{manifest.rows_rejected} of {manifest.api_total} records rejected ({rate:.2%}, "
            f"at most {max_reject_rate:.2%} allowed)"
        ),
    )


def audit_volume_change(
    conn: sa.Connection,
    endpoint: str,
    snapshot_date: date,
    max_change: float = DEFAULT_MAX_VOLUME_CHANGE,
) -> AuditResult:
    """The stored row count is within ±max_change of the previous stored day's (a warning)."""
    _check_endpoint(endpoint)
    name = "volume_change"
    if not _table_exists(conn, endpoint):
        return _result(
            name,
            endpoint,
            snapshot_date,
            passed=False,
            observed=None,
            threshold=max_change,
            description=f"table {RAW_SCHEMA}.{endpoint} does not exist",
            severity="WARN",
        )
    day = quote_ident(SNAPSHOT_DATE_COLUMN)
    # The previous *stored* day: a missed day compares with the last one that exists.
    previous = conn.execute(
        sa.text(f"SELECT max({day}) FROM {_table(endpoint)} WHERE {day} < :day"),
        {"day": snapshot_date},
    ).scalar_one()
    current = stored_rows(conn, endpoint, snapshot_date)
    if previous is None:
        return _result(
            name,
            endpoint,
            snapshot_date,
            passed=True,
            observed=None,
            threshold=max_change,
            description=f"no stored day before {snapshot_date} to compare {current} rows with",
            severity="WARN",
        )
    before = stored_rows(conn, endpoint, previous)
    change = (current - before) / before if before else (0.0 if current == 0 else float("inf"))
    observed_change: float | str = round(change, 6) if before else str(change)
    return _result(
        name,
        endpoint,
        snapshot_date,
        passed=abs(change) <= max_change,
        observed=observed_change,
        threshold=max_change,
        description=(
            f"{current} rows vs {before} on {previous} ({change:+.1%}, "
            f"within ±{max_change:.0%} expected)"
        ),
        severity="WARN",
    )


AUDITS: Final[tuple[Callable[[sa.Connection, str, date], AuditResult], ...]] = (
    audit_completeness,
    audit_unique_keys,
    audit_required_fields,
    audit_schema_drift,
    audit_reject_rate,
    audit_volume_change,
)


def audit_snapshot(conn: sa.Connection, endpoint: str, snapshot_date: date) -> list[AuditResult]:
    """Run every audit of one raw snapshot, with the default thresholds."""
    _check_endpoint(endpoint)
    return [audit(conn, endpoint, snapshot_date) for audit in AUDITS]


def blocking_failures(results: list[AuditResult]) -> list[AuditResult]:
    """The failed audits that forbid publishing the snapshot."""
    return [r for r in results if r.blocking and not r.passed]


def assert_snapshot_publishable(
    conn: sa.Connection, endpoint: str, snapshot_date: date
) -> list[AuditResult]:
    """Run the audits and raise when a blocking one fails.

    Args:
        conn: A connection (normally inside the merge's transaction).
        endpoint: ``users``, ``tracks`` or ``listen_history``.
        snapshot_date: The snapshot's day.

    Returns:
        Every audit result (warnings included) when none of the blocking ones failed.

    Raises:
        SnapshotAuditError: A blocking audit failed; names the audit, endpoint and date.
    """
    results = audit_snapshot(conn, endpoint, snapshot_date)
    failures = blocking_failures(results)
    if failures:
        raise SnapshotAuditError(endpoint, snapshot_date, failures)
    return results
