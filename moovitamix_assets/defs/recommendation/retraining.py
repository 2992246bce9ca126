"""The retraining job, its weekly schedule and its sensor, which asks for a new candidate when
the data grew or the production model decayed (``evaluate_triggers``)."""

import json
import os
from collections.abc import Mapping
from typing import Annotated, Any, Final

import dagster as dg
import pydantic
from pydantic import Field

from moovitamix_assets.constants import RECOMMENDATION_GROUP
from moovitamix_assets.defs.recommendation import registry
from moovitamix_assets.defs.recommendation.data import count_interactions
from moovitamix_assets.warehouse.database import PostgresResource

RETRAINING_JOB_NAME: Final = "model_retraining"
# The instance runs at most one run with this tag at a time (tag_concurrency_limits in
# deploy/dagster.yaml and in the local instance of the CLI): two trainings never collide.
EXCLUSIVE_TAG: Final = "moovitamix/exclusive"
DEFAULT_WEEKLY_RETRAINING_CRON: Final = "0 4 * * 1"

# Weekly (schedule) or on demand (the sensor), the whole group: split, train, gate, promote, serve.
retraining_job = dg.define_asset_job(
    name=RETRAINING_JOB_NAME,
    selection=dg.AssetSelection.groups(RECOMMENDATION_GROUP),
    tags={EXCLUSIVE_TAG: RETRAINING_JOB_NAME},
    description=(
        "Train a candidate model and promote it only if it beats what serves beyond the noise; "
        "then evaluate what serves and refresh every user's recommendations."
    ),
)

SENSOR_NAME: Final = "retraining_sensor"
TRIGGER_TAG: Final = "moovitamix/retraining_trigger"
# Fired keys remembered in the cursor; older ones belong to long-replaced versions.
_CURSOR_KEYS: Final = 100
_ACTIVE_STATUSES: Final = [
    dg.DagsterRunStatus(s) for s in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")
]


@pydantic.dataclasses.dataclass(frozen=True)
class RetrainingThresholds:
    """When the sensor asks for retraining (a pydantic ValidationError, a ValueError, if not)."""

    growth_share: Annotated[float, Field(gt=0)] = 0.2
    max_relative_decay: Annotated[float, Field(ge=0, lt=1)] = 0.25
    min_metric: float | None = None
    metric: str = "precision_at_k"


def evaluate_triggers(
    production: Any,
    last_attempt: Any,
    current_interactions: int | None,
    latest_evaluation: Any,
    thresholds: RetrainingThresholds,
    not_fired: list[str],
) -> dict[str, str]:
    """The conditions that hold now, growth first, by key (``growth:c5``, ``decay:v3``: each fires
    once) with why; ``not_fired`` receives why the others did not. Growth: interactions grew by
    ``growth_share`` since the last training attempt (a refusal re-arms it). Decay: the latest
    evaluation interval lies under ``min_metric``, else the metric at training less
    ``max_relative_decay``. Pure: the sensor feeds it the rows it read."""
    fired: dict[str, str] = {}

    def judge(key: str, holds: bool, detail: str) -> dict[str, str]:
        if holds:
            fired[key] = f"fired: {detail}"
        else:
            not_fired.append(f"{key.split(':')[0]} not fired: {detail}")
        return fired

    def not_evaluated(why: str) -> dict[str, str]:
        not_fired.append(f"decay not evaluated: {why}")
        return fired

    if current_interactions is None:
        not_fired.append("core.user_track_interactions does not exist yet")
        return {}
    before = last_attempt.data_interactions if last_attempt else 0
    if before <= 0:
        grew = current_interactions > 0
        detail = f"no interactions at the last training, {current_interactions} now"
    else:
        growth = (current_interactions - before) / before
        grew = growth >= thresholds.growth_share
        detail = (
            f"interactions grew {growth:+.1%} ({before} -> {current_interactions}),"
            f" {'>=' if grew else '<'} the {thresholds.growth_share:.0%} threshold"
        )
    judge(f"growth:{f'c{last_attempt.version}' if last_attempt else 'none'}", grew, detail)
    if production is None or latest_evaluation is None:
        return not_evaluated("no daily evaluation of a production model yet")
    metrics, metric = latest_evaluation.metrics, thresholds.metric
    interval = metrics.get("interval") or {}
    point = (metrics.get("production") or {}).get(metric)
    if interval.get("metric") == metric and interval.get("high") is not None:
        mean, low, high = (float(interval[name]) for name in ("mean", "low", "high"))
    elif point is not None:  # recorded before intervals: a point is its own bounds
        mean = low = high = float(point)
    else:
        return not_evaluated(f"the evaluation has no {metric}")
    threshold = thresholds.min_metric
    if threshold is None:
        at_training = (production.metrics.get("candidate") or {}).get(metric)
        if at_training is None:
            return not_evaluated(f"{production.name} has no {metric}")
        threshold = float(at_training) * (1.0 - thresholds.max_relative_decay)
    # Only when the whole confidence interval is under the threshold: a dip inside the noise
    # is no decay.
    decayed = high < threshold
    return judge(
        f"decay:v{production.version}",
        decayed,
        f"production metric {mean:.4f} [{low:.4f}, {high:.4f}], "
        f"upper bound {'<' if decayed else '>='} threshold {threshold:.4f}",
    )


def build_retraining_sensor(limits: RetrainingThresholds) -> dg.SensorDefinition:
    """The retraining sensor (running by default) on the ``model_retraining`` job; each
    evaluation runs a ``count(*)`` of the interactions."""

    @dg.sensor(
        name=SENSOR_NAME,
        job=retraining_job,
        minimum_interval_seconds=15 * 60,
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
        active = context.instance.get_run_ids(
            dg.RunsFilter(job_name=RETRAINING_JOB_NAME, statuses=_ACTIVE_STATUSES), limit=1
        )
        if active:
            return dg.SkipReason(f"retraining run {active[0]} is queued or in progress")
        engine = postgres.engine()
        not_fired: list[str] = []
        fired = evaluate_triggers(
            registry.production_entry(engine),
            registry.latest_trained_entry(engine),
            count_interactions(engine),
            registry.latest_evaluation(engine),
            limits,
            not_fired,
        )
        try:
            already = list(json.loads(context.cursor or "{}").get("fired", []))
        except (ValueError, AttributeError):
            already = []
        new = {key: reason for key, reason in fired.items() if key not in already}
        if not new:
            if fired:
                return dg.SkipReason(
                    "already requested for this data and production version: "
                    + "; ".join(f"{key} ({reason})" for key, reason in fired.items())
                )
            return dg.SkipReason("no retraining condition holds: " + "; ".join(not_fired))
        request = dg.RunRequest(
            run_key="+".join(new),
            tags={
                TRIGGER_TAG: ",".join(key.split(":")[0] for key in new),
                "moovitamix/retraining_reason": "; ".join(new.values())[:4000],
            },
        )
        cursor = json.dumps({"fired": [*already, *new][-_CURSOR_KEYS:]})
        return dg.SensorResult(run_requests=[request], cursor=cursor)

    return retraining_sensor


def thresholds_from_env(env: Mapping[str, str] = os.environ) -> RetrainingThresholds:
    """Thresholds from ``MOOVITAMIX_RETRAIN_*`` variables (ValueError when malformed)."""
    variables = {
        "growth_share": "MOOVITAMIX_RETRAIN_GROWTH_SHARE",
        "max_relative_decay": "MOOVITAMIX_RETRAIN_MAX_DECAY",
        "min_metric": "MOOVITAMIX_RETRAIN_MIN_METRIC",
    }
    return RetrainingThresholds(**{n: float(env[v]) for n, v in variables.items() if env.get(v)})


def build_weekly_retraining_schedule(cron: str) -> dg.ScheduleDefinition:
    """The weekly retraining schedule, running by default: 04:00 UTC on Mondays leaves the 02:00
    daily run time to finish, so the candidate learns from that day's core."""

    @dg.schedule(
        name="weekly_retraining_schedule",
        cron_schedule=cron,
        execution_timezone="UTC",
        job=retraining_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every week: train a candidate model and promote it if it beats what serves.",
    )
    def _weekly_retraining_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = context.scheduled_execution_time.date().isoformat()
        return dg.RunRequest(run_key=f"weekly:{day}", tags={TRIGGER_TAG: "weekly_cron"})

    return _weekly_retraining_schedule
