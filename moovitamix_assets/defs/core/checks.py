"""Asset checks of the core tables, judged after each merge on the state it left.

What the next step relies on (unique keys, usable interactions) is ERROR and blocks; the source's
data quality is WARN; orphans are ERROR without blocking (the interactions leave them out). Three
subsettable ops, so that blocking works without a cycle (an op runs after every asset it checks):
core/users and core/tracks, both upstream of core/listen_events, share one.
"""

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple

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
    CORE_TABLES,
    INTERACTIONS_TABLE,
    LISTEN_EVENTS_TABLE,
    STORAGE_TABLES,
    TRACKS_TABLE,
    USERS_TABLE,
    core_tables_exist,
    load_sql,
    newest_merged,
)
from moovitamix_assets.warehouse.database import PostgresResource

# Deliberately loose: one @, no blanks, a dot in the domain. Deliverability is not our concern.
EMAIL_PATTERN: Final = r"^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$"
INACTIVE_WINDOW_DAYS: Final = 30
_CATALOGUE: Final = (USERS_TABLE, TRACKS_TABLE)
# Each check: the tables it audits, severity, blocking, threshold.
_RULES: Final = {
    "primary_key": (CORE_TABLES, "ERROR", True, 0),
    "timestamps_sane": (_CATALOGUE, "WARN", False, 0),
    "email_validity": ((USERS_TABLE,), "WARN", False, 0.99),  # the contract promises e-mails
    # Normal churn (1% of users a day) leaves about 23% of the records seen in 30 days unlisted;
    # half means the API dropped records.
    "inactive_share": ((*_CATALOGUE, LISTEN_EVENTS_TABLE), "WARN", False, 0.5),
    # About 6% is normal on the first day (listens of tracks the API removed before our first
    # snapshot), shrinking afterwards; well over twice that: catalogue and listening out of step.
    "orphan_rate": ((LISTEN_EVENTS_TABLE,), "ERROR", False, 0.15),
    "valid_interactions": ((INTERACTIONS_TABLE,), "ERROR", True, 0),
}
# Each check's description, and the wording of its audit's row (and the query's parameters).
_TEXTS: Final = {
    "primary_key": (
        "The primary key constraint exists and no key is duplicated or null (ERROR).",
        "{note}{duplicate_keys} duplicated and {null_keys} null key(s) in {rows} rows",
    ),
    "timestamps_sane": (
        "Active records updated before created or stamped in the future are counted (WARN).",
        "{observed} of {active_records} active records have odd timestamps: "
        "{updated_before_created} updated before created, {future_timestamps} stamped after "
        "{as_of} (UTC)",
    ),
    "email_validity": (
        "At least 99% of active users have a well-formed e-mail address (WARN).",
        "{valid} of {active_users} active users have a well-formed e-mail ({observed:.2%}, "
        "at least {threshold:.0%} expected)",
    ),
    "inactive_share": (
        "At most half of the records seen in the last 30 days are no longer served (WARN).",
        "{recent_inactive} of the {recent_records} records seen in the {window_days} days up to "
        "{as_of} are no longer served ({observed:.1%}, at most {threshold:.0%} expected); "
        "{inactive_records} inactive in all",
    ),
    "orphan_rate": (
        "At most 15% of active listening pairs reference an unknown user or track (ERROR, "
        "not blocking: interactions leave orphans out).",
        "{orphan_pairs} of {active_pairs} active pairs are orphans ({observed:.2%}, at most "
        "{threshold:.0%} allowed): {unknown_user_pairs} with an unknown user, "
        "{unknown_track_pairs} with an unknown track{note}",
    ),
    "valid_interactions": (
        "Every interaction has a known user and track and a positive weight (ERROR).",
        "{observed} of {rows} interactions unusable: {unknown_references} with an unknown "
        "user or track, {bad_weights} with a weight that is not a positive number",
    ),
}


class CoreCheck(NamedTuple):
    """One check: ``sql/audit_<name>.sql`` returns ``observed``, ``passed`` (given ``:threshold``)
    and the figures, ``explain`` words that row. Its outcome: the same tuple with ``passed``,
    ``observed``, ``figures`` (its metadata) and the worded row as ``description``."""

    name: str
    severity: Severity
    blocking: bool
    threshold: float
    description: str
    explain: str
    passed: bool = False
    observed: float | int | None = None
    figures: dict[str, Any] = {}


CORE_CHECKS: Final = {
    table: tuple(
        CoreCheck(name, *rule[1:], *_TEXTS[name])
        for name, rule in _RULES.items()
        if table in rule[0]
    )
    for table in CORE_TABLES
}
# Columns of an audit's row that only its description uses, not figures (metadata) of its check.
_NOT_FIGURES: Final = ("passed", "observed", "as_of", "note", "valid")


def run_core_audits(
    engine: sa.Engine, selected: Mapping[str, Sequence[str]]
) -> Iterator[tuple[str, CoreCheck]]:
    """Run the selected audits (table -> check names) in one read-only transaction, in order."""
    with engine.connect() as conn:
        # One consistent view of all tables: the orphan rate joins three of them.
        conn.execution_options(isolation_level="REPEATABLE READ")
        for table, names in selected.items():
            # Every core table is created at once (ensure_core_schema), merge_log with them.
            exists = core_tables_exist(conn, table)
            # The interactions are a view: their state is that of the merged listening.
            merged_as = LISTEN_EVENTS_TABLE if table == INTERACTIONS_TABLE else table
            newest = newest_merged(conn, merged_as) if exists else None
            keys = ("id",) if table in _CATALOGUE else ("user_id", "track_id")
            params = {
                "newest": newest,
                "keys": ", ".join(keys),
                "storage": f"{CORE_SCHEMA}.{STORAGE_TABLES.get(table, table)}",
                "pattern": EMAIL_PATTERN,
                "window_days": INACTIVE_WINDOW_DAYS,
            }
            for check in (c for c in CORE_CHECKS[table] if c.name in names):
                params["threshold"] = check.threshold
                row: dict[str, Any] = {"passed": False, "observed": None}
                description = f"table {CORE_SCHEMA}.{table} does not exist: the merge never ran"
                if exists:
                    sql = load_sql(f"audit_{check.name}", table, keys)
                    row = dict(conn.execute(sql, params).mappings().one())
                    description = check.explain.format(**row, **params)
                figures = {k: v for k, v in row.items() if k not in _NOT_FIGURES}
                figures["newest_merged_snapshot"] = newest.isoformat() if newest else None
                judged = {"passed": row["passed"], "observed": row["observed"]}
                yield table, check._replace(description=description, figures=figures, **judged)


def build_core_checks(
    name: str, tables: Sequence[str], description: str
) -> dg.AssetChecksDefinition:
    """Build one subsettable op evaluating the checks of the given core tables."""
    specs = [
        daily_check_spec(
            check.name,
            dg.AssetKey([CORE_SCHEMA, table]),
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
        selected = {
            table: names
            for table in tables
            if (names := selected_names(context, dg.AssetKey([CORE_SCHEMA, table])))
        }
        for table, result in run_core_audits(postgres.engine(), selected):
            extra = {"partition": context.partition_key, **result.figures}
            yield to_check_result(dg.AssetKey([CORE_SCHEMA, table]), result, extra)

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
