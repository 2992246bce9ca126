"""Audits of one stored raw snapshot (endpoint, day): the "audit" step of write-audit-publish.

The core merge calls :func:`assert_snapshot_publishable` in its own transaction, so a snapshot
failing a blocking (ERROR) audit never reaches ``core``, in the daily job or alone; the raw asset
checks run the same audits. The snapshot's figures are read once, then each audit judges them. The
volume audit only warns: a catalogue that grows or shrinks a lot is worth a look, not a stop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from types import SimpleNamespace
from typing import Final, NamedTuple

import sqlalchemy as sa

from moovitamix_assets.check_results import Severity
from moovitamix_assets.constants import LISTEN_HISTORY_ENDPOINT, RAW_SCHEMA, SNAPSHOT_DATE_COLUMN
from moovitamix_assets.contract import KEY_FIELD, fields_of
from moovitamix_assets.defs.ingestion.tables import MANIFEST_TABLE, RAW_COLUMNS
from moovitamix_assets.warehouse.io_manager import table_columns

# Share of the API's records the raw layer may reject before the snapshot is unusable.
MAX_REJECT_RATE: Final = 0.01
# Share of rows repeating another row's key. A few duplicates are data the API really serves (the
# merge resolves them deterministically); many mean a torn read (pages shifted while data changed).
MAX_DUPLICATE_RATE: Final = 0.01
# Day-over-day change of the stored row count that deserves a look.
MAX_VOLUME_CHANGE: Final = 0.5
# Columns never null in a stored snapshot: the key, or the timestamps of a listen history (whose
# user_id may be null).
REQUIRED_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    **{endpoint: (key,) for endpoint, key in KEY_FIELD.items()},
    LISTEN_HISTORY_ENDPOINT: ("created_at", "updated_at"),
}
_DAY: Final = f'"{SNAPSHOT_DATE_COLUMN}"'
_NO_MANIFEST: Final = "no manifest row for {f.endpoint} on {f.day}: the read did not finish"


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


def _figures(conn: sa.Connection, endpoint: str, day: date) -> SimpleNamespace | None:
    """What the audits judge, None without the table: its column types, one statement's counts of
    the day's rows and the manifest's figures (None when the read did not finish)."""
    fields_of(endpoint)  # ValueError for an unknown endpoint
    with conn.connection.cursor() as cur:  # the same transaction; format_type's spelling
        columns = table_columns(cur, RAW_SCHEMA, endpoint)
    if not columns:
        return None
    table, key = f'"{RAW_SCHEMA}"."{endpoint}"', KEY_FIELD[endpoint]
    nulls = ", ".join(f'count(*) FILTER (WHERE "{c}" IS NULL)' for c in REQUIRED_COLUMNS[endpoint])
    # The previous *stored* day: a missed day compares with the last one that exists.
    row = conn.execute(
        sa.text(
            f"WITH previous AS (SELECT max({_DAY}) AS day FROM {table} WHERE {_DAY} < :day), "
            f'counts AS (SELECT count(*) AS stored, count("{key}") AS keyed, '
            f'count(DISTINCT "{key}") AS distinct_keys, ARRAY[{nulls}] AS nulls, '
            "(SELECT day FROM previous) AS previous, (SELECT count(*) FROM "
            f"{table} WHERE {_DAY} = (SELECT day FROM previous)) AS before "
            f"FROM {table} WHERE {_DAY} = :day) "
            "SELECT counts.*, m.api_total, m.rows_valid, m.rows_rejected, m.extra_fields, "
            f"m.missing_fields FROM counts LEFT JOIN {RAW_SCHEMA}.{MANIFEST_TABLE} m "
            f"ON m.endpoint = :endpoint AND m.{_DAY} = :day"
        ),
        {"day": day, "endpoint": endpoint},
    ).one()
    return SimpleNamespace(endpoint=endpoint, day=day, columns=columns, **row._asdict())


Verdict = tuple[bool, float | int | str | None, float | int | str | None, str]


def _completeness(f: SimpleNamespace) -> Verdict:
    """Rows stored plus rows rejected equal the API's announced total for the day (ERROR)."""
    # The stored count must also be the read's own; no manifest row: no complete read.
    if f.api_total is None:
        return False, f.stored, None, _NO_MANIFEST.format(f=f)
    accounted = f.stored + f.rows_rejected
    return (
        accounted == f.api_total and f.stored == f.rows_valid,
        accounted,
        f.api_total,
        f"{f.stored} stored + {f.rows_rejected} rejected rows vs the API's total of "
        f"{f.api_total} (the read stored {f.rows_valid})",
    )


def _share(count: int, of: int, limit: float, what: str, observed: int | None = None) -> Verdict:
    """At most ``limit`` of ``of``; observed is the rate unless given."""
    rate = count / of if of else 0.0
    text = f"{count} of {of} {what} ({rate:.2%}, at most {limit:.2%} allowed)"
    return rate <= limit, round(rate, 6) if observed is None else observed, limit, text


def _unique_keys(f: SimpleNamespace) -> Verdict:
    """At most 1% of the day's rows repeat another row's id (ERROR: pages overlapped)."""
    # The key is user_id for listen_history, where nulls are not duplicates of each other.
    duplicates, key = f.keyed - f.distinct_keys, KEY_FIELD[f.endpoint]
    what = f"rows repeat another row's {key}"
    return _share(duplicates, f.keyed, MAX_DUPLICATE_RATE, what, observed=duplicates)


def _required_fields(f: SimpleNamespace) -> Verdict:
    """Keys and the timestamps the merge orders by are never null (ERROR)."""
    detail = ", ".join(
        f"{c}: {n}" for c, n in zip(REQUIRED_COLUMNS[f.endpoint], f.nulls, strict=True)
    )
    return sum(f.nulls) == 0, sum(f.nulls), 0, f"null values in required columns ({detail})"


def _schema_drift(f: SimpleNamespace) -> Verdict:
    """The API served exactly the contract's fields; the table has the expected types (ERROR)."""
    expected, actual = RAW_COLUMNS[f.endpoint], f.columns
    problems = ["no manifest row (the read did not finish)"] if f.api_total is None else []
    if f.extra_fields:
        problems.append(f"fields not in the contract: {', '.join(f.extra_fields)}")
    if f.missing_fields:
        problems.append(f"contract fields missing: {', '.join(f.missing_fields)}")
    if missing := sorted(set(expected) - set(actual)):
        problems.append(f"table lacks columns {', '.join(missing)}")
    if extra := sorted(set(actual) - set(expected)):
        problems.append(f"table has unexpected columns {', '.join(extra)}")
    if retyped := sorted(
        f"{c} is {actual[c]} not {t}" for c, t in expected.items() if actual.get(c, t) != t
    ):
        problems.append("; ".join(retyped))
    text = "; ".join(problems) or "records and table match the contract"
    return not problems, len(problems), 0, text


def _reject_rate(f: SimpleNamespace) -> Verdict:
    """At most 1% of the API's records failed validation and went to raw.rejects (ERROR)."""
    if f.api_total is None:
        return False, None, MAX_REJECT_RATE, _NO_MANIFEST.format(f=f)
    return _share(f.rows_rejected, f.api_total, MAX_REJECT_RATE, "records rejected")


def _volume_change(f: SimpleNamespace) -> Verdict:
    """Stored rows within ±50% of the previous stored day (WARN: worth a look, never blocks)."""
    if f.previous is None:
        text = f"no stored day before {f.day} to compare {f.stored} rows with"
        return True, None, MAX_VOLUME_CHANGE, text
    current, before = f.stored, f.before
    change = (current - before) / before if before else (0.0 if current == 0 else float("inf"))
    text = (
        f"{current} rows vs {before} on {f.previous} ({change:+.1%}, within "
        f"±{MAX_VOLUME_CHANGE:.0%} expected)"
    )
    observed = round(change, 6) if before else str(change)
    return abs(change) <= MAX_VOLUME_CHANGE, observed, MAX_VOLUME_CHANGE, text


class Audit(NamedTuple):
    """One audit: its (check) name, severity, description and verdict on a snapshot's figures."""

    name: str
    severity: Severity
    description: str
    judge: Callable[[SimpleNamespace], Verdict]


# Each audit's docstring is its check's description.
AUDITS: Final[tuple[Audit, ...]] = tuple(
    Audit(judge.__name__.lstrip("_"), severity, judge.__doc__ or "", judge)
    for judge, severity in (
        (_completeness, "ERROR"),
        (_unique_keys, "ERROR"),
        (_required_fields, "ERROR"),
        (_schema_drift, "ERROR"),
        (_reject_rate, "ERROR"),
        (_volume_change, "WARN"),
    )
)


def audit_snapshot(
    conn: sa.Connection, endpoint: str, snapshot_date: date, names: list[str] | None = None
) -> list[AuditResult]:
    """Run the named audits (all by default) of one raw snapshot; without its table, each fails."""
    figures = _figures(conn, endpoint, snapshot_date)
    missing = (False, None, None, f"table {RAW_SCHEMA}.{endpoint} does not exist")
    return [
        AuditResult(
            a.name, endpoint, snapshot_date, *(a.judge(figures) if figures else missing), a.severity
        )
        for a in AUDITS
        if names is None or a.name in names
    ]


def assert_snapshot_publishable(
    conn: sa.Connection, endpoint: str, snapshot_date: date
) -> list[AuditResult]:
    """Every audit result of a snapshot (warnings included), or SnapshotAuditError naming the
    failed blocking audits, the endpoint and the date; run inside the merge's transaction."""
    results = audit_snapshot(conn, endpoint, snapshot_date)
    if failures := [r for r in results if r.blocking and not r.passed]:
        raise SnapshotAuditError(endpoint, snapshot_date, failures)
    return results
