"""The retraining sensor: ask for a new candidate when the data grew or the model decayed.

Two conditions, read from ``ml.model_registry`` and ``ml.model_evaluations``:

* growth: ``core.user_track_interactions`` has grown by at least ``growth_share`` since the last
  training attempt, promoted or refused (``ml.gating.growth_trigger``); before any attempt, any
  interaction is growth (the first candidate is trained without waiting for the week). After a
  refusal the trigger re-arms from the refused candidate's data: retraining comes back once there
  is enough new listening to change the verdict, never on every tick and never never;
* decay: the production model's latest daily evaluation is under a threshold beyond its
  confidence interval (``ml.gating.decay_trigger``: the interval's upper bound is below
  ``min_metric`` when set, else below its own metric at training reduced by
  ``max_relative_decay``).

Each condition fires once per key (``growth:c5`` = growth since attempt 5, ``decay:v3`` = decay
of production version 3): the key is the run key, so the daemon never launches it twice, and it
is kept in the cursor. No request is made while a retraining run is queued or in progress, and
the job's tag is limited to one run at a time by the instance (``deploy/dagster.yaml``).
"""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timezone
from typing import Final

import dagster as dg

from moovitamix_assets.defs.recommendation import registry
from moovitamix_assets.defs.recommendation.data import count_interactions
from moovitamix_assets.defs.recommendation.keys import RETRAINING_KEYS
from moovitamix_assets.ml.gating import decay_trigger, growth_trigger
from moovitamix_assets.ml.significance import Interval
from moovitamix_assets.warehouse.database import PostgresResource

RETRAINING_JOB_NAME: Final = "model_retraining"
# The instance runs at most one run with this tag at a time (tag_concurrency_limits in
# deploy/dagster.yaml and in the local instance of the CLI): two trainings never collide.
EXCLUSIVE_TAG: Final = "moovitamix/exclusive"
DEFAULT_WEEKLY_RETRAINING_CRON: Final = "0 4 * * 1"

# Weekly (schedule) or on demand (the sensor): split, train, gate, promote, serve.
retraining_job = dg.define_asset_job(
    name=RETRAINING_JOB_NAME,
    selection=dg.AssetSelection.assets(*RETRAINING_KEYS),
    tags={EXCLUSIVE_TAG: RETRAINING_JOB_NAME},
    description=(
        "Train a candidate model and promote it only if it beats what serves beyond the noise; "
        "then evaluate what serves and refresh every user's recommendations."
    ),
)

SENSOR_NAME: Final = "retraining_sensor"
TRIGGER_TAG: Final = "moovitamix/retraining_trigger"
DEFAULT_GROWTH_SHARE: Final = 0.2
DEFAULT_MAX_RELATIVE_DECAY: Final = 0.25
DEFAULT_DECAY_METRIC: Final = "precision_at_k"
DEFAULT_INTERVAL_SECONDS: Final = 15 * 60
# Fired keys remembered in the cursor; older ones belong to long-replaced versions.
_CURSOR_KEYS: Final = 100

GROWTH_SHARE_ENV: Final = "MOOVITAMIX_RETRAIN_GROWTH_SHARE"
MAX_DECAY_ENV: Final = "MOOVITAMIX_RETRAIN_MAX_DECAY"
MIN_METRIC_ENV: Final = "MOOVITAMIX_RETRAIN_MIN_METRIC"


@dataclass(frozen=True)
class Trigger:
    """A fired retraining condition: its de-duplication key and why it fired."""

    key: str
    kind: str
    reason: str


@dataclass(frozen=True)
class RetrainingThresholds:
    """When the sensor asks for retraining."""

    growth_share: float = DEFAULT_GROWTH_SHARE
    max_relative_decay: float = DEFAULT_MAX_RELATIVE_DECAY
    min_metric: float | None = None
    metric: str = DEFAULT_DECAY_METRIC

    def __post_init__(self) -> None:
        if self.growth_share <= 0:
            raise ValueError(f"growth_share must be > 0, got {self.growth_share}")
        if not 0 <= self.max_relative_decay < 1:
            raise ValueError(f"max_relative_decay must be in [0, 1), got {self.max_relative_decay}")


def _production_interval(evaluation: registry.Evaluation, metric: str) -> Interval | None:
    """The evaluation's interval of ``metric``; a point (no interval recorded) is its own bounds."""
    interval = evaluation.metrics.get("interval") or {}
    if interval.get("metric") == metric and interval.get("high") is not None:
        return Interval(
            float(interval["mean"]),
            float(interval["low"]),
            float(interval["high"]),
            float(interval.get("confidence", 0.95)),
        )
    observed = (evaluation.metrics.get("production") or {}).get(metric)
    if observed is None:
        return None
    return Interval(float(observed), float(observed), float(observed), 0.0)


def evaluate_triggers(
    production: registry.RegistryEntry | None,
    last_attempt: registry.RegistryEntry | None,
    current_interactions: int | None,
    latest_evaluation: registry.Evaluation | None,
    thresholds: RetrainingThresholds,
    not_fired: list[str] | None = None,
) -> list[Trigger]:
    """The retraining conditions that hold now (pure: the sensor feeds it what it read).

    Args:
        production: The production model's registry row, or None.
        last_attempt: The newest trained model, promoted or refused, or None.
        current_interactions: Rows of ``core.user_track_interactions`` (None: no table yet).
        latest_evaluation: The production model's newest daily evaluation, or None.
        thresholds: Growth and decay thresholds.
        not_fired: When given, receives why each condition did not fire (the sensor's skip
            reason).

    Returns:
        The fired triggers (possibly empty), growth first.
    """
    notes = not_fired if not_fired is not None else []
    if current_interactions is None:
        notes.append("core.user_track_interactions does not exist yet")
        return []
    fired: list[Trigger] = []
    attempt = f"c{last_attempt.version}" if last_attempt else "none"
    baseline = last_attempt.snapshot.interactions if last_attempt else 0
    grew, reason = growth_trigger(current_interactions, baseline, thresholds.growth_share)
    if grew:
        fired.append(Trigger(key=f"growth:{attempt}", kind="growth", reason=reason))
    else:
        notes.append(f"growth {reason}")
    if production is None or latest_evaluation is None:
        notes.append("decay not evaluated: no daily evaluation of a production model yet")
        return fired
    observed = _production_interval(latest_evaluation, thresholds.metric)
    if observed is None:
        notes.append(f"decay not evaluated: the evaluation has no {thresholds.metric}")
        return fired
    threshold = thresholds.min_metric
    if threshold is None:
        at_training = production.metric("candidate", thresholds.metric)
        if at_training is None:
            notes.append(f"decay not evaluated: {production.name} has no {thresholds.metric}")
            return fired
        threshold = at_training * (1.0 - thresholds.max_relative_decay)
    decayed, reason = decay_trigger(observed, threshold)
    if decayed:
        fired.append(Trigger(key=f"decay:v{production.version}", kind="decay", reason=reason))
    else:
        notes.append(f"decay {reason}")
    return fired


_ACTIVE_STATUSES: Final = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _retraining_in_progress(instance: dg.DagsterInstance) -> str | None:
    """The id of a queued or running retraining run, if any."""
    records = instance.get_run_records(
        dg.RunsFilter(job_name=RETRAINING_JOB_NAME, statuses=_ACTIVE_STATUSES), limit=1
    )
    return records[0].dagster_run.run_id if records else None


def _fired_keys(cursor: str | None) -> list[str]:
    if not cursor:
        return []
    try:
        keys = json.loads(cursor).get("fired", [])
    except (ValueError, AttributeError):
        return []
    return [str(k) for k in keys]


def build_retraining_sensor(
    thresholds: RetrainingThresholds | None = None,
    minimum_interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
) -> dg.SensorDefinition:
    """Build the retraining sensor (running by default) on the ``model_retraining`` job.

    Args:
        thresholds: Growth and decay thresholds (defaults: +20 % interactions, -25 % metric).
        minimum_interval_seconds: Seconds between evaluations (each runs a ``count(*)``).

    Returns:
        The sensor definition; it needs the ``postgres`` resource.
    """
    limits = thresholds or RetrainingThresholds()

    @dg.sensor(
        name=SENSOR_NAME,
        job=retraining_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Retrain when interactions grew by {limits.growth_share:.0%} since the last training "
            "attempt (promoted or refused), or when the production model's daily evaluation "
            "decayed beyond its confidence interval; never while a retraining run is active."
        ),
    )
    def retraining_sensor(
        context: dg.SensorEvaluationContext, postgres: PostgresResource
    ) -> dg.SensorResult | dg.SkipReason:
        running = _retraining_in_progress(context.instance)
        if running is not None:
            return dg.SkipReason(f"retraining run {running} is queued or in progress")
        engine = postgres.engine()
        production = registry.production_entry(engine)
        latest = registry.latest_evaluation(engine, production.version) if production else None
        not_fired: list[str] = []
        fired = evaluate_triggers(
            production,
            registry.latest_trained_entry(engine),
            count_interactions(engine),
            latest,
            limits,
            not_fired,
        )
        already = _fired_keys(context.cursor)
        new = [t for t in fired if t.key not in already]
        if not new:
            if fired:
                return dg.SkipReason(
                    "already requested for this data and production version: "
                    + "; ".join(f"{t.key} ({t.reason})" for t in fired)
                )
            return dg.SkipReason("no retraining condition holds: " + "; ".join(not_fired))
        for trigger in new:
            context.log.info("retraining trigger %s: %s", trigger.key, trigger.reason)
        request = dg.RunRequest(
            run_key="+".join(t.key for t in new),
            tags={
                TRIGGER_TAG: ",".join(t.kind for t in new),
                "moovitamix/retraining_reason": "; ".join(t.reason for t in new)[:4000],
            },
        )
        cursor = json.dumps({"fired": [*already, *(t.key for t in new)][-_CURSOR_KEYS:]})
        return dg.SensorResult(run_requests=[request], cursor=cursor)

    return retraining_sensor


def thresholds_from_env(environ: Mapping[str, str] | None = None) -> RetrainingThresholds:
    """Thresholds from ``MOOVITAMIX_RETRAIN_*`` variables, defaults for the unset ones.

    Raises:
        ValueError: A variable is set but not a number, or out of range.
    """
    env = os.environ if environ is None else environ
    min_metric = env.get(MIN_METRIC_ENV)
    return RetrainingThresholds(
        growth_share=float(env.get(GROWTH_SHARE_ENV, DEFAULT_GROWTH_SHARE)),
        max_relative_decay=float(env.get(MAX_DECAY_ENV, DEFAULT_MAX_RELATIVE_DECAY)),
        min_metric=float(min_metric) if min_metric else None,
    )


def build_weekly_retraining_schedule(
    cron: str = DEFAULT_WEEKLY_RETRAINING_CRON,
) -> dg.ScheduleDefinition:
    """Build the weekly retraining schedule (UTC, Mondays 04:00 by default), running by default.

    04:00 leaves the 02:00 daily run time to finish, so the candidate learns from that day's core.
    """

    @dg.schedule(
        name="weekly_retraining_schedule",
        cron_schedule=cron,
        execution_timezone="UTC",
        job=retraining_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every week: train a candidate model and promote it if it beats what serves.",
    )
    def _weekly_retraining_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = context.scheduled_execution_time.astimezone(timezone.utc).date().isoformat()
        return dg.RunRequest(run_key=f"weekly:{day}", tags={TRIGGER_TAG: "weekly_cron"})

    return _weekly_retraining_schedule
