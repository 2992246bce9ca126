"""Alert sensors: one message per failed ERROR check, failed run and asset turning stale.

Each keeps its progress in its cursor, so a re-evaluation or a daemon restart never alerts twice
and a first tick starts from now. They read the instance, so they cover every asset and check.
"""

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Final

from dagster import (
    AssetCheckSeverity,
    DagsterEventType,
    DefaultSensorStatus,
    EventRecordsFilter,
    RunFailureSensorContext,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from moovitamix_assets.alerts import Alert, AlertNotifier, error_headline

PARTITION_TAG: Final = "dagster/partition"
_PAGE_SIZE: Final = 200
# Running by default, at most every minute: the delay an operator accepts.
_ALERTING: Final = {"minimum_interval_seconds": 60, "default_status": DefaultSensorStatus.RUNNING}


def _short(value: Any, limit: int = 80) -> str:
    value = getattr(value, "value", value)  # a MetadataValue or a plain value
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def observed_and_expected(metadata: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """A check's `observed` and `expected` (else `threshold`); without either, a summary."""
    observed = metadata.get("observed")
    expected = metadata.get("expected", metadata.get("threshold"))
    if observed is None and expected is None:
        summary = ", ".join(f"{key}={_short(value, 60)}" for key, value in metadata.items())
        return (_short(summary, 300) if summary else None), None
    return tuple(None if v is None else _short(v) for v in (observed, expected))


def run_error_summary(step_failures: Sequence[Any], failure_message: str | None) -> str:
    """Why a run failed: `step: error` per failed step, else the run's message."""
    errors = [(event.step_key, event.step_failure_data.error) for event in step_failures]
    parts = [f"{step}: {error_headline(error)}" for step, error in errors if error]
    return _short("; ".join(parts) or failure_message or "run failed", 600)


def _format_age(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s"


@sensor(description="One alert per failed asset check of ERROR severity.", **_ALERTING)
def asset_check_failure_alert_sensor(
    context: SensorEvaluationContext, alert_notifier: AlertNotifier
) -> SkipReason:
    # The asset_check_executions index exists in every event-log storage (the run-sharded SQLite
    # one cannot query check events across runs). A row is created PLANNED and updated when
    # evaluated, so rows become final out of id order: the cursor is a watermark below which
    # every row is final, plus the ids above it already alerted.
    check_keys = list(context.repository_def.asset_graph.asset_check_keys)
    storage = context.instance.event_log_storage
    if not context.cursor:
        latest = storage.get_latest_asset_check_execution_by_key(check_keys)
        watermark = max((record.id for record in latest.values()), default=0)
        context.update_cursor(json.dumps({"watermark": watermark, "sent": []}))
        return SkipReason(f"Started at check execution {watermark}.")
    cursor = json.loads(context.cursor)
    watermark, sent = cursor["watermark"], set(cursor["sent"])

    rows = []
    for key in check_keys:  # newest first, page by page down to the watermark
        before = None
        while True:
            page = storage.get_asset_check_execution_history(key, limit=_PAGE_SIZE, cursor=before)
            rows += [row for row in page if row.id > watermark]
            if len(page) < _PAGE_SIZE or page[-1].id <= watermark:
                break
            before = page[-1].id
    run_ids = sorted({row.run_id for row in rows if row.run_id})
    found = context.instance.get_runs(RunsFilter(run_ids=run_ids)) if run_ids else []
    runs = {run.run_id: run for run in found}

    alerted, open_ids = 0, []
    for row in sorted(rows, key=lambda r: r.id):
        evaluation, run, key = row.evaluation, runs.get(row.run_id), row.key.asset_key
        # A row still PLANNED holds the watermark only while its run may still evaluate the
        # check; a run that is over (or deleted) never will.
        if row.status.value == "PLANNED" and run is not None and not run.is_finished:
            open_ids.append(row.id)
        # A FAILED row always holds its evaluation.
        failed = row.status.value == "FAILED" and evaluation.severity == AssetCheckSeverity.ERROR
        if not failed or row.id in sent:
            continue
        asset = key.to_user_string()
        partition = row.partition or (run and run.tags.get(PARTITION_TAG))
        where = f"{asset} [{partition}]" if partition else asset
        observed, expected = observed_and_expected(evaluation.metadata or {})
        alert_notifier.send(
            Alert(
                kind="check_failed",
                title=f"Check {row.key.name} failed on {where}",
                asset_key=asset,
                partition=partition,
                observed=observed,
                expected=expected,
                run_id=run.run_id if run else None,
                # A check reported without a run (by an external system) links to its asset.
                link=alert_notifier.run_url(run.run_id) if run else alert_notifier.asset_url(key),
                dedupe_key=f"check_failed:{asset}:{row.key.name}:{partition or '-'}:{row.id}",
                details=evaluation.description,
            ),
            context.log,
        )
        sent.add(row.id)
        alerted += 1

    max_seen = max((row.id for row in rows), default=watermark)
    watermark = max(watermark, min(open_ids) - 1 if open_ids else max_seen)
    sent_above = sorted(i for i in sent if i > watermark)
    context.update_cursor(json.dumps({"watermark": watermark, "sent": sent_above}))
    return SkipReason(f"{alerted} check alert(s) sent; {len(rows)} execution(s) examined.")


@run_failure_sensor(description="One alert per failed run of this code location.", **_ALERTING)
def run_failure_alert_sensor(
    context: RunFailureSensorContext, alert_notifier: AlertNotifier
) -> None:
    # Dagster's run-status cursor passes each run once, and send() never raises: at most once.
    run, instance = context.dagster_run, context.instance
    # The assets the run planned but did not materialize (else its selection) need a look.
    failed = set(
        instance.get_asset_keys_for_run(run.run_id, DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    ) - set(instance.get_asset_keys_for_run(run.run_id, DagsterEventType.ASSET_MATERIALIZATION))
    assets = sorted(key.to_user_string() for key in failed or run.asset_selection or ())
    partition = run.tags.get(PARTITION_TAG)
    alert_notifier.send(
        Alert(
            kind="run_failed",
            title=f"Run of {run.job_name}{f' [{partition}]' if partition else ''} failed",
            asset_key=", ".join(assets) or None,
            partition=partition,
            observed="FAILURE",
            expected="SUCCESS",
            run_id=run.run_id,
            link=alert_notifier.run_url(run.run_id),
            dedupe_key=f"run_failed:{run.run_id}",
            details=run_error_summary(
                context.get_step_failure_events(), context.failure_event.message
            ),
        ),
        context.log,
    )


@sensor(description="One alert each time an asset's freshness policy turns to FAIL.", **_ALERTING)
def freshness_failure_alert_sensor(
    context: SensorEvaluationContext, alert_notifier: AlertNotifier
) -> SkipReason:
    # The freshness daemon records each transition as a FRESHNESS_STATE_CHANGE asset event,
    # indexed by storage id in every storage, so the cursor is the last storage id handled.
    change_type = DagsterEventType.FRESHNESS_STATE_CHANGE
    storage = context.instance.event_log_storage
    if not context.cursor:
        latest = storage.get_event_records(EventRecordsFilter(change_type), limit=1)
        context.update_cursor(str(latest[0].storage_id if latest else 0))
        return SkipReason(f"Started at event {context.cursor}.")

    graph = context.repository_def.asset_graph
    # A long backlog is worked through a page per tick.
    changes = EventRecordsFilter(change_type, after_cursor=int(context.cursor))
    alerted = 0
    for record in storage.get_event_records(changes, limit=_PAGE_SIZE, ascending=True):
        context.update_cursor(str(record.storage_id))
        change = record.event_log_entry.dagster_event.event_specific_data
        key = change.key
        new_fail = change.new_state.value == "FAIL" != change.previous_state.value
        if not new_fail or not graph.has(key):  # or another code location's asset
            continue
        last = context.instance.get_latest_materialization_event(key)
        observed = "never materialized"
        if last is not None:
            age = _format_age(change.state_change_timestamp - last.timestamp)
            when = datetime.fromtimestamp(last.timestamp, tz=timezone.utc)
            observed = f"last materialized {age} ago ({when:%Y-%m-%d %H:%M} UTC)"
        window = getattr(graph.get(key).freshness_policy, "fail_window", None)
        expected = "within its freshness policy"
        if window:
            expected = f"materialized within {_format_age(window.to_timedelta().total_seconds())}"
        asset = key.to_user_string()
        alert_notifier.send(
            Alert(
                kind="freshness_failed",
                title=f"{asset} is stale (freshness FAIL)",
                asset_key=asset,
                partition=last.asset_materialization.partition if last else None,
                observed=observed,
                expected=expected,
                link=alert_notifier.asset_url(key),
                dedupe_key=f"freshness_failed:{asset}:{record.storage_id}",
            ),
            context.log,
        )
        alerted += 1
    return SkipReason(f"{alerted} freshness alert(s) sent.")


# They need the `alert_notifier` resource (an AlertNotifier).
ALERT_SENSORS: Final[list[SensorDefinition]] = [
    asset_check_failure_alert_sensor,
    run_failure_alert_sensor,
    freshness_failure_alert_sensor,
]
