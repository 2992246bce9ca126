"""Alert sensors: one message per failed ERROR check, failed run and asset turning stale.

Every sensor keeps its progress in its cursor, so a re-evaluation, a daemon restart or a failed
delivery never sends the same alert twice (a failed delivery is logged, then considered handled:
an alert storm against a broken webhook is worse than one lost message that is in the log).
They read the instance, not the definitions, so they cover every asset and check of the code
location without naming any.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    DagsterEventType,
    DagsterRun,
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

from moovitamix_assets.alerts import Alert, AlertNotifier

ALERT_NOTIFIER_RESOURCE_KEY: Final = "alert_notifier"
PARTITION_TAG: Final = "dagster/partition"

CHECK_ALERT_SENSOR_NAME: Final = "asset_check_failure_alert_sensor"
RUN_ALERT_SENSOR_NAME: Final = "run_failure_alert_sensor"
FRESHNESS_ALERT_SENSOR_NAME: Final = "freshness_failure_alert_sensor"

# Sensors are cheap (a few indexed queries); a minute is the delay an operator accepts.
ALERT_SENSOR_INTERVAL_SECONDS: Final = 60
# Page size for the storage reads, and a cap on pages per tick so a huge backlog after a long
# outage is worked through over several ticks instead of one tick that times out.
_PAGE_SIZE: Final = 200
_MAX_PAGES_PER_TICK: Final = 20
_METADATA_SUMMARY_MAX: Final = 300
_ERROR_SUMMARY_MAX: Final = 600

# Values of dagster's (non-public) AssetCheckExecutionRecordStatus and FreshnessState enums.
_EXECUTION_PLANNED: Final = "PLANNED"
_EXECUTION_FAILED: Final = "FAILED"
_FRESHNESS_FAIL: Final = "FAIL"


# --------------------------------------------------------------------------------------------
# Pure helpers (message content)
# --------------------------------------------------------------------------------------------


def _raw(value: Any) -> Any:
    """The plain Python value of a MetadataValue (or the value itself)."""
    return getattr(value, "value", value)


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def observed_and_expected(metadata: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Pick the observed and expected values out of a check's metadata.

    Args:
        metadata: The check evaluation's metadata (MetadataValue objects or plain values).

    Returns:
        `(observed, expected)`: the `observed` key and the `expected` (else `threshold`) key when
        present; otherwise the observed side summarises the whole metadata and expected is None.
    """
    observed = metadata.get("observed")
    expected = metadata.get("expected", metadata.get("threshold"))
    if observed is not None or expected is not None:
        return (
            _short(_raw(observed)) if observed is not None else None,
            _short(_raw(expected)) if expected is not None else None,
        )
    if not metadata:
        return None, None
    summary = ", ".join(f"{key}={_short(_raw(value), 60)}" for key, value in metadata.items())
    return _short(summary, _METADATA_SUMMARY_MAX), None


def run_error_summary(step_failures: Sequence[Any], failure_message: str | None) -> str:
    """One short paragraph on why a run failed: the failed steps' errors, else the run message.

    Args:
        step_failures: The run's STEP_FAILURE DagsterEvents.
        failure_message: The RUN_FAILURE event's message.

    Returns:
        `step: ErrorClass: message` per failed step (first line of each message), truncated.
    """
    parts: list[str] = []
    for event in step_failures:
        error = getattr(getattr(event, "step_failure_data", None), "error", None)
        if error is None:
            continue
        # Dagster wraps user code errors ("Error occurred while executing op ..."): the
        # innermost cause is the one that says what went wrong.
        while error.cause is not None:
            error = error.cause
        first_line = (error.message or "").strip().splitlines()
        message = first_line[0] if first_line else error.cls_name or "error"
        # error.message already starts with the class name ("ValueError: ...").
        parts.append(f"{event.step_key}: {message}")
    text = "; ".join(parts) if parts else (failure_message or "run failed")
    return _short(text, _ERROR_SUMMARY_MAX)


def _format_age(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def build_check_alert(
    *,
    notifier: AlertNotifier,
    execution_id: int,
    check_key: AssetCheckKey,
    evaluation: Any,
    partition: str | None,
    run_id: str | None,
) -> Alert:
    """Alert for one failed check evaluation.

    Args:
        notifier: Gives the UI base URL for the link.
        execution_id: Id of the check execution (unique per evaluation: the dedupe key).
        check_key: The check.
        evaluation: The AssetCheckEvaluation.
        partition: The partition checked, if any.
        run_id: The run that evaluated the check (None for a runless report).

    Returns:
        The alert, linked to the run (or to the asset page without a run).
    """
    asset = check_key.asset_key.to_user_string()
    observed, expected = observed_and_expected(evaluation.metadata or {})
    where = f"{asset} [{partition}]" if partition else asset
    return Alert(
        kind="check_failed",
        title=f"Check {check_key.name} failed on {where}",
        asset_key=asset,
        partition=partition,
        observed=observed,
        expected=expected,
        run_id=run_id,
        link=notifier.run_url(run_id) if run_id else notifier.asset_url(check_key.asset_key),
        dedupe_key=f"check_failed:{asset}:{check_key.name}:{partition or '-'}:{execution_id}",
        details=evaluation.description,
    )


def build_run_failure_alert(
    *,
    notifier: AlertNotifier,
    run: DagsterRun,
    error_summary: str,
    partition: str | None,
    failed_assets: Iterable[AssetKey] = (),
) -> Alert:
    """Alert for one failed run.

    Args:
        notifier: Gives the UI base URL for the link.
        run: The failed run.
        error_summary: Why it failed (see `run_error_summary`).
        partition: The run's partition, if any.
        failed_assets: Assets the run did not materialize; the run's asset selection if empty.

    Returns:
        The alert, linked to the run.
    """
    keys = list(failed_assets) or list(run.asset_selection or ())
    assets = sorted(key.to_user_string() for key in keys)
    where = f" [{partition}]" if partition else ""
    return Alert(
        kind="run_failed",
        title=f"Run of {run.job_name}{where} failed",
        asset_key=", ".join(assets) or None,
        partition=partition,
        observed="FAILURE",
        expected="SUCCESS",
        run_id=run.run_id,
        link=notifier.run_url(run.run_id),
        dedupe_key=f"run_failed:{run.run_id}",
        details=error_summary,
    )


def build_freshness_alert(
    *,
    notifier: AlertNotifier,
    storage_id: int,
    asset_key: AssetKey,
    state_change_timestamp: float,
    last_materialization_timestamp: float | None,
    last_partition: str | None,
    fail_window_seconds: float | None,
) -> Alert:
    """Alert for one asset whose freshness turned to FAIL.

    Args:
        notifier: Gives the UI base URL for the link.
        storage_id: Event-log id of the FRESHNESS_STATE_CHANGE event (the dedupe key).
        asset_key: The stale asset.
        state_change_timestamp: When the daemon saw the change (Unix seconds).
        last_materialization_timestamp: The asset's latest materialization, if any.
        last_partition: The partition of that materialization, if any.
        fail_window_seconds: The policy's fail window, when known.

    Returns:
        The alert, linked to the asset page.
    """
    asset = asset_key.to_user_string()
    if last_materialization_timestamp is None:
        observed = "never materialized"
    else:
        age = _format_age(state_change_timestamp - last_materialization_timestamp)
        when = datetime.fromtimestamp(last_materialization_timestamp, tz=timezone.utc)
        observed = f"last materialized {age} ago ({when:%Y-%m-%d %H:%M} UTC)"
    expected = (
        f"materialized within {_format_age(fail_window_seconds)}"
        if fail_window_seconds is not None
        else "within its freshness policy"
    )
    return Alert(
        kind="freshness_failed",
        title=f"{asset} is stale (freshness FAIL)",
        asset_key=asset,
        partition=last_partition,
        observed=observed,
        expected=expected,
        run_id=None,
        link=notifier.asset_url(asset_key),
        dedupe_key=f"freshness_failed:{asset}:{storage_id}",
    )


# --------------------------------------------------------------------------------------------
# Cursors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckAlertCursor:
    """Progress of the check sensor over the asset-check execution index.

    An execution row is created when a check is planned and updated in place when it is
    evaluated, so rows do not become final in id order. `watermark` is the highest id below
    which every row is final (evaluated, or its run is over); `sent` holds the ids above it
    that were already alerted.
    """

    watermark: int
    sent: frozenset[int] = field(default_factory=frozenset)

    def to_json(self) -> str:
        return json.dumps({"watermark": self.watermark, "sent": sorted(self.sent)})

    @classmethod
    def from_json(cls, text: str | None) -> "CheckAlertCursor | None":
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(int(data["watermark"]), frozenset(int(i) for i in data.get("sent", [])))
        except (ValueError, KeyError, TypeError):
            return None


def _parse_int_cursor(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# Storage reads
# --------------------------------------------------------------------------------------------


def _executions_after(storage: Any, check_key: AssetCheckKey, watermark: int) -> list[Any]:
    """Execution records of one check with an id above the watermark (newest pages first)."""
    rows: list[Any] = []
    before: int | None = None
    for _ in range(_MAX_PAGES_PER_TICK):
        page = storage.get_asset_check_execution_history(check_key, limit=_PAGE_SIZE, cursor=before)
        rows.extend(row for row in page if row.id > watermark)
        if len(page) < _PAGE_SIZE or page[-1].id <= watermark:
            break
        before = page[-1].id
    return rows


def _runs_by_id(context: SensorEvaluationContext, run_ids: Iterable[str]) -> dict[str, DagsterRun]:
    ids = sorted({run_id for run_id in run_ids if run_id})
    if not ids:
        return {}
    records = context.instance.get_run_records(filters=RunsFilter(run_ids=ids))
    return {record.dagster_run.run_id: record.dagster_run for record in records}


# --------------------------------------------------------------------------------------------
# Sensors
# --------------------------------------------------------------------------------------------


@sensor(
    name=CHECK_ALERT_SENSOR_NAME,
    description="One alert per failed asset check of ERROR severity.",
    minimum_interval_seconds=ALERT_SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
)
def asset_check_failure_alert_sensor(
    context: SensorEvaluationContext, alert_notifier: AlertNotifier
) -> SkipReason:
    """One alert per failed asset check of ERROR severity."""
    if context.repository_def is None:
        return SkipReason("No code location definitions: nothing to monitor.")
    check_keys = sorted(
        context.repository_def.asset_graph.asset_check_keys, key=lambda key: key.to_user_string()
    )
    storage = context.instance.event_log_storage
    cursor = CheckAlertCursor.from_json(context.cursor)

    if cursor is None:
        # First tick: start from now rather than alerting on the whole history.
        latest = storage.get_latest_asset_check_execution_by_key(check_keys) if check_keys else {}
        watermark = max((record.id for record in latest.values()), default=0)
        context.update_cursor(CheckAlertCursor(watermark).to_json())
        return SkipReason(f"Started at check execution {watermark}.")

    # The asset_check_executions index lives in every event-log storage (including the
    # run-sharded SQLite one, where cross-run queries on ASSET_CHECK_EVALUATION events by
    # storage id are not possible), and it carries the partition and run of each evaluation.
    rows = [row for key in check_keys for row in _executions_after(storage, key, cursor.watermark)]
    planned = [row for row in rows if row.status.value == _EXECUTION_PLANNED]
    failed = sorted(
        (row for row in rows if row.status.value == _EXECUTION_FAILED), key=lambda r: r.id
    )
    runs = _runs_by_id(context, [row.run_id for row in planned + failed])

    notifier = alert_notifier
    sent = set(cursor.sent)
    alerted = 0
    for row in failed:
        evaluation = row.evaluation
        if row.id in sent or evaluation is None:
            continue
        if evaluation.severity != AssetCheckSeverity.ERROR:
            continue
        run = runs.get(row.run_id)
        partition = (
            row.partition or evaluation.partition or (run.tags if run else {}).get(PARTITION_TAG)
        )
        alert = build_check_alert(
            notifier=notifier,
            execution_id=row.id,
            check_key=row.key,
            evaluation=evaluation,
            partition=partition,
            run_id=run.run_id if run else None,
        )
        notifier.send(alert, context.log)
        sent.add(row.id)
        alerted += 1

    # A row still PLANNED holds the watermark only while its run may still evaluate the check;
    # a run that is over (or deleted) never will.
    open_ids = [
        row.id
        for row in planned
        if (run := runs.get(row.run_id)) is not None and not run.is_finished
    ]
    max_seen = max((row.id for row in rows), default=cursor.watermark)
    watermark = max(cursor.watermark, min(open_ids) - 1 if open_ids else max_seen)
    next_cursor = CheckAlertCursor(watermark, frozenset(i for i in sent if i > watermark))
    context.update_cursor(next_cursor.to_json())
    return SkipReason(f"{alerted} check alert(s) sent; {len(rows)} execution(s) examined.")


@run_failure_sensor(
    name=RUN_ALERT_SENSOR_NAME,
    description="One alert per failed run of this code location.",
    minimum_interval_seconds=ALERT_SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
)
def run_failure_alert_sensor(context: RunFailureSensorContext, alert_notifier: AlertNotifier):
    """One alert per failed run of this code location."""
    run = context.dagster_run
    summary = run_error_summary(context.get_step_failure_events(), context.failure_event.message)
    # The assets the run planned but did not materialize: the ones an operator must look at.
    planned = context.instance.get_asset_keys_for_run(
        run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    )
    done = context.instance.get_asset_keys_for_run(
        run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    )
    failed_assets = set(planned) - set(done)
    alert = build_run_failure_alert(
        notifier=alert_notifier,
        run=run,
        error_summary=summary,
        partition=run.tags.get(PARTITION_TAG),
        failed_assets=failed_assets,
    )
    # Dagster advances this sensor's cursor past the run once this function returns, and send()
    # never raises: a run is alerted at most once.
    alert_notifier.send(alert, context.log)


def _fail_window_seconds(context: SensorEvaluationContext, asset_key: AssetKey) -> float | None:
    repository_def = context.repository_def
    if repository_def is None or not repository_def.asset_graph.has(asset_key):
        return None
    policy = repository_def.asset_graph.get(asset_key).freshness_policy
    fail_window = getattr(policy, "fail_window", None)
    return fail_window.to_timedelta().total_seconds() if fail_window is not None else None


@sensor(
    name=FRESHNESS_ALERT_SENSOR_NAME,
    description="One alert each time an asset's freshness policy turns to FAIL.",
    minimum_interval_seconds=ALERT_SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
)
def freshness_failure_alert_sensor(
    context: SensorEvaluationContext, alert_notifier: AlertNotifier
) -> SkipReason:
    """One alert each time an asset's freshness policy turns to FAIL."""
    # The freshness daemon records each state transition as a FRESHNESS_STATE_CHANGE event. It is
    # an asset event, indexed globally by storage id in every storage, so a plain id cursor works.
    storage = context.instance.event_log_storage
    watermark = _parse_int_cursor(context.cursor)
    if watermark is None:
        latest = storage.get_event_records(
            EventRecordsFilter(DagsterEventType.FRESHNESS_STATE_CHANGE), limit=1, ascending=False
        )
        watermark = latest[0].storage_id if latest else 0
        context.update_cursor(str(watermark))
        return SkipReason(f"Started at event {watermark}.")

    repository_def = context.repository_def
    own_keys = repository_def.asset_graph.get_all_asset_keys() if repository_def else None
    notifier = alert_notifier
    alerted = 0
    for _ in range(_MAX_PAGES_PER_TICK):
        records = storage.get_event_records(
            EventRecordsFilter(DagsterEventType.FRESHNESS_STATE_CHANGE, after_cursor=watermark),
            limit=_PAGE_SIZE,
            ascending=True,
        )
        for record in records:
            watermark = record.storage_id
            change = record.event_log_entry.dagster_event.event_specific_data
            turned_to_fail = (
                change.new_state.value == _FRESHNESS_FAIL
                and change.previous_state.value != _FRESHNESS_FAIL
            )
            if not turned_to_fail or (own_keys is not None and change.key not in own_keys):
                continue
            last = context.instance.get_latest_materialization_event(change.key)
            last_mat = last.asset_materialization if last else None
            alert = build_freshness_alert(
                notifier=notifier,
                storage_id=record.storage_id,
                asset_key=change.key,
                state_change_timestamp=change.state_change_timestamp,
                last_materialization_timestamp=last.timestamp if last else None,
                last_partition=last_mat.partition if last_mat else None,
                fail_window_seconds=_fail_window_seconds(context, change.key),
            )
            notifier.send(alert, context.log)
            alerted += 1
        context.update_cursor(str(watermark))
        if len(records) < _PAGE_SIZE:
            break
    return SkipReason(f"{alerted} freshness alert(s) sent.")


def build_alert_sensors() -> list[SensorDefinition]:
    """The three alert sensors; they need the `alert_notifier` resource (an AlertNotifier)."""
    return [
        asset_check_failure_alert_sensor,
        run_failure_alert_sensor,
        freshness_failure_alert_sensor,
    ]
