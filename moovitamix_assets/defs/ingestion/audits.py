"""Audits of one stored raw snapshot (endpoint, day): the "audit" step of write-audit-publish.

The core merge calls :func:`assert_snapshot_publishable` in its own transaction, so a snapshot
failing a blocking (ERROR) audit never reaches ``core``, in the daily job or alone; the raw asset
checks run the same functions, and each audit's docstring is its check's description. The volume
audit only warns: a catalogue that grows or shrinks a lot is worth a look, not a stop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Literal

import sqlalchemy as sa

from moovitamix_assets.constants import (
    LISTEN_HISTORY_ENDPOINT,
    RAW_SCHEMA,
    SNAPSHOT_DATE_COLUMN,
    TRACKS_ENDPOINT,
    USERS_ENDPOINT,
)
from moovitamix_assets.contract import KEY_FIELD
from moovitamix_assets.defs.ingestion.tables import EXPECTED_COLUMNS, MANIFEST_TABLE

Severity = Literal["ERROR", "WARN"]

# Share of the API's records the raw layer may reject before the snapshot is unusable.
MAX_REJECT_RATE: Final = 0.01
# Share of rows repeating another row's key. A few duplicates are data the API really serves (the
# merge resolves them deterministically); many mean a torn read (pages shifted while data changed).
MAX_DUPLICATE_RATE: Final = 0.01
# Day-over-day change of the stored row count that deserves a look.
MAX_VOLUME_CHANGE: Final = 0.5
# Columns that must never be null in a stored snapshot (the key, or the record's timestamps).
REQUIRED_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    USERS_ENDPOINT: ("id",),
    TRACKS_ENDPOINT: ("id",),
    LISTEN_HISTORY_ENDPOINT: ("created_at", "updated_at"),
}
_DAY: Final = f'"{SNAPSHOT_DATE_COLUMN}" = :day'


@dataclass(frozen=True)
class AuditResult:
    """The outcome of one audit of one raw snapshot."""

    name: str
    endpoint: str
    snapshot_date: date
    passed: bool
    observed: float | int | str | None
    threshold: float | int | str | None
    description: str
    severity: Severity = "ERROR"

    @property
    def blocking(self) -> bool:
        """Whether a failure forbids publishing the snapshot (the ERROR audits)."""
        return self.severity == "ERROR"


class SnapshotAuditError(RuntimeError):
    """A raw snapshot failed a blocking audit: it must not be published to ``core``."""

    def __init__(self, endpoint: str, snapshot_date: date, failures: list[AuditResult]) -> None:
        self.endpoint, self.snapshot_date, self.failures = endpoint, snapshot_date, failures
        detail = "; ".join(f"{f.name}: {f.description}" for f in failures)
        super().__init__(
            f"raw snapshot {RAW_SCHEMA}.{endpoint} of {snapshot_date.isoformat()} failed "
            f"{len(failures)} blocking audit(s), core was not modified: {detail}"
        )


def _table(endpoint: str) -> str:
    if endpoint not in EXPECTED_COLUMNS:
        raise ValueError(f"unknown MooVitamix endpoint {endpoint!r}")
    return f'"{RAW_SCHEMA}"."{endpoint}"'


def _exists(conn: sa.Connection, table: str) -> bool:
    name = f"{RAW_SCHEMA}.{table}"
    return conn.execute(sa.text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}).scalar_one()


def _manifest(conn: sa.Connection, endpoint: str, day: date) -> Any:
    """The manifest row of a snapshot, or None when the read did not finish."""
    if not _exists(conn, MANIFEST_TABLE):
        return None
    return conn.execute(
        sa.text(
            "SELECT api_total, rows_valid, rows_rejected, extra_fields, missing_fields "
            f"FROM {RAW_SCHEMA}.{MANIFEST_TABLE} WHERE endpoint = :endpoint AND {_DAY}"
        ),
        {"endpoint": endpoint, "day": day},
    ).one_or_none()


def stored_rows(conn: sa.Connection, endpoint: str, day: date) -> int:
    """Rows of one day in a raw table (0 when the table does not exist)."""
    if not _exists(conn, endpoint):
        return 0
    query = sa.text(f"SELECT count(*) FROM {_table(endpoint)} WHERE {_DAY}")
    return conn.execute(query, {"day": day}).scalar_one()


def _missing_table(name: str, endpoint: str, day: date, threshold: Any, **kw: Any) -> AuditResult:
    text = f"table {RAW_SCHEMA}.{endpoint} does not exist"
    return AuditResult(name, endpoint, day, False, None, threshold, text, **kw)


def audit_completeness(conn: sa.Connection, endpoint: str, day: date) -> AuditResult:
    """Rows stored plus rows rejected equal the API's announced total for the day (ERROR)."""
    # The stored count must also be the read's own; no manifest row: no complete read.
    stored = stored_rows(conn, endpoint, day)
    if (manifest := _manifest(conn, endpoint, day)) is None:
        text = f"no manifest row for {endpoint} on {day}: the read did not finish"
        return AuditResult("completeness", endpoint, day, False, stored, None, text)
    accounted = stored + manifest.rows_rejected
    return AuditResult(
        "completeness",
        endpoint,
        day,
        accounted == manifest.api_total and stored == manifest.rows_valid,
        accounted,
        manifest.api_total,
        f"{stored} stored + {manifest.rows_rejected} rejected rows vs the API's total of "
        f"{manifest.api_total} (the read stored {manifest.rows_valid})",
    )


def audit_unique_keys(conn: sa.Connection, endpoint: str, day: date) -> AuditResult:
    """At most 1% of the day's rows repeat another row's id (ERROR: pages overlapped)."""
    # The key is user_id for listen_history, where nulls are not duplicates of each other.
    table, key, max_rate = _table(endpoint), KEY_FIELD[endpoint], MAX_DUPLICATE_RATE
    if not _exists(conn, endpoint):
        return _missing_table("unique_keys", endpoint, day, max_rate)
    keyed, distinct = conn.execute(
        sa.text(f'SELECT count("{key}"), count(DISTINCT "{key}") FROM {table} WHERE {_DAY}'),
        {"day": day},
    ).one()
    duplicates = int(keyed - distinct)
    rate = duplicates / keyed if keyed else 0.0
    text = (
        f"{duplicates} of {keyed} rows repeat another row's {key} ({rate:.2%}, at most "
        f"{max_rate:.2%} allowed)"
    )
    return AuditResult("unique_keys", endpoint, day, rate <= max_rate, duplicates, max_rate, text)


def audit_required_fields(conn: sa.Connection, endpoint: str, day: date) -> AuditResult:
    """Keys and the timestamps the merge orders by are never null (ERROR)."""
    table, columns = _table(endpoint), REQUIRED_COLUMNS[endpoint]
    if not _exists(conn, endpoint):
        return _missing_table("required_fields", endpoint, day, 0)
    counts = ", ".join(f'count(*) FILTER (WHERE "{c}" IS NULL)' for c in columns)
    row = conn.execute(sa.text(f"SELECT {counts} FROM {table} WHERE {_DAY}"), {"day": day}).one()
    detail = ", ".join(f"{c}: {n}" for c, n in zip(columns, row, strict=True))
    text = f"null values in required columns ({detail})"
    return AuditResult("required_fields", endpoint, day, sum(row) == 0, sum(row), 0, text)


def audit_schema_drift(conn: sa.Connection, endpoint: str, day: date) -> AuditResult:
    """The API served exactly the contract's fields; the table has the expected types (ERROR)."""
    expected, problems = EXPECTED_COLUMNS[endpoint], []
    if (manifest := _manifest(conn, endpoint, day)) is None:
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
    if not actual:
        problems.append(f"table {RAW_SCHEMA}.{endpoint} does not exist")
    else:
        if missing := sorted(set(expected) - set(actual)):
            problems.append(f"table lacks columns {', '.join(missing)}")
        if extra := sorted(set(actual) - set(expected)):
            problems.append(f"table has unexpected columns {', '.join(extra)}")
        if retyped := sorted(
            f"{c} is {actual[c]} not {t}" for c, t in expected.items() if actual.get(c, t) != t
        ):
            problems.append("; ".join(retyped))
    text = "; ".join(problems) or "records and table match the contract"
    return AuditResult("schema_drift", endpoint, day, not problems, len(problems), 0, text)


def audit_reject_rate(conn: sa.Connection, endpoint: str, day: date) -> AuditResult:
    """At most 1% of the API's records failed validation and went to raw.rejects (ERROR)."""
    max_rate = MAX_REJECT_RATE
    if (manifest := _manifest(conn, endpoint, day)) is None:
        text = f"no manifest row for {endpoint} on {day}: the read did not finish"
        return AuditResult("reject_rate", endpoint, day, False, None, max_rate, text)
    rate = manifest.rows_rejected / manifest.api_total if manifest.api_total else 0.0
    text = (
        f"{manifest.rows_rejected} of {manifest.api_total} records rejected ({rate:.2%}, at most "
        f"{max_rate:.2%} allowed)"
    )
    return AuditResult(
        "reject_rate", endpoint, day, rate <= max_rate, round(rate, 6), max_rate, text
    )


def audit_volume_change(conn: sa.Connection, endpoint: str, day: date) -> AuditResult:
    """Stored rows within ±50% of the previous stored day (WARN: worth a look, never blocks)."""
    table, max_change = _table(endpoint), MAX_VOLUME_CHANGE
    if not _exists(conn, endpoint):
        return _missing_table("volume_change", endpoint, day, max_change, severity="WARN")
    # The previous *stored* day: a missed day compares with the last one that exists.
    previous = conn.execute(
        sa.text(
            f'SELECT max("{SNAPSHOT_DATE_COLUMN}") FROM {table} '
            f'WHERE "{SNAPSHOT_DATE_COLUMN}" < :day'
        ),
        {"day": day},
    ).scalar_one()
    current = stored_rows(conn, endpoint, day)
    if previous is None:
        text = f"no stored day before {day} to compare {current} rows with"
        return AuditResult("volume_change", endpoint, day, True, None, max_change, text, "WARN")
    before = stored_rows(conn, endpoint, previous)
    change = (current - before) / before if before else (0.0 if current == 0 else float("inf"))
    text = (
        f"{current} rows vs {before} on {previous} ({change:+.1%}, within ±{max_change:.0%} "
        "expected)"
    )
    observed = round(change, 6) if before else str(change)
    passed = abs(change) <= max_change
    return AuditResult("volume_change", endpoint, day, passed, observed, max_change, text, "WARN")


AUDITS: Final[tuple[Callable[[sa.Connection, str, date], AuditResult], ...]] = (
    audit_completeness,
    audit_unique_keys,
    audit_required_fields,
    audit_schema_drift,
    audit_reject_rate,
    audit_volume_change,
)


def audit_snapshot(conn: sa.Connection, endpoint: str, snapshot_date: date) -> list[AuditResult]:
    """Run every audit of one raw snapshot."""
    _table(endpoint)
    return [audit(conn, endpoint, snapshot_date) for audit in AUDITS]


def assert_snapshot_publishable(
    conn: sa.Connection, endpoint: str, snapshot_date: date
) -> list[AuditResult]:
    """Every audit result of a snapshot (warnings included), or SnapshotAuditError naming the
    failed blocking audits, the endpoint and the date; run inside the merge's transaction."""
    results = audit_snapshot(conn, endpoint, snapshot_date)
    if failures := [r for r in results if r.blocking and not r.passed]:
        raise SnapshotAuditError(endpoint, snapshot_date, failures)
    return results
