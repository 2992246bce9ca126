"""The retraining sensor: ask for a new candidate when the data grew or the model decayed.

Two conditions, both judged against the current production model (``ml.model_registry``):

* growth: ``core.user_track_interactions`` has grown by at least ``growth_share`` since the
  production model's data snapshot (``ml.gating.growth_trigger``); with no production model at
  all, any interaction is growth (the first model gets trained without waiting for the week);
* decay: the production model's latest daily evaluation (``ml.model_evaluations``) is under a
  threshold (``ml.gating.decay_trigger``): ``min_metric`` when set, else its own metric at
  training time reduced by ``max_relative_decay``.

Each condition fires at most once per production version: its key (``growth:v3``,
``decay:v3``, ``growth:none``) is the run key, so the daemon never launches it twice, and it is
kept in the cursor, so the sensor does not even ask again. A promotion changes the version and
re-arms both; a refused candidate leaves them spent until the next promotion or the weekly cron.
"""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import dagster as dg

from moovitamix_assets.assets.recommendation import registry
from moovitamix_assets.assets.recommendation.data import count_interactions
from moovitamix_assets.jobs import retraining_job
from moovitamix_assets.ml.gating import decay_trigger, growth_trigger
from moovitamix_assets.resources.database import PostgresResource

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


def evaluate_triggers(
    production: registry.RegistryEntry | None,
    current_interactions: int | None,
    latest_evaluation: registry.Evaluation | None,
    thresholds: RetrainingThresholds,
) -> list[Trigger]:
    """The retraining conditions that hold now (pure: the sensor feeds it what it read).

    Args:
        production: The production model's registry row, or None.
        current_interactions: Rows of ``core.user_track_interactions`` (None: no table yet).
        latest_evaluation: The production model's newest daily evaluation, or None.
        thresholds: Growth and decay thresholds.

    Returns:
        The fired triggers (possibly empty), growth first.
    """
    if current_interactions is None:
        return []
    fired: list[Trigger] = []
    version = f"v{production.version}" if production else "none"
    baseline = production.snapshot.interactions if production else 0
    grew, reason = growth_trigger(current_interactions, baseline, thresholds.growth_share)
    if grew:
        fired.append(Trigger(key=f"growth:{version}", kind="growth", reason=reason))
    if production is None or latest_evaluation is None:
        return fired
    observed = (latest_evaluation.metrics.get("production") or {}).get(thresholds.metric)
    if observed is None:
        return fired
    threshold = thresholds.min_metric
    if threshold is None:
        at_training = production.metric("candidate", thresholds.metric)
        if at_training is None:
            return fired
        threshold = at_training * (1.0 - thresholds.max_relative_decay)
    decayed, reason = decay_trigger(float(observed), threshold)
    if decayed:
        fired.append(Trigger(key=f"decay:{version}", kind="decay", reason=reason))
    return fired


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
            f"Retrain when interactions grew by {limits.growth_share:.0%} since the production "
            "model's snapshot, or when its daily evaluation decayed; once per condition and "
            "production version."
        ),
    )
    def retraining_sensor(
        context: dg.SensorEvaluationContext, postgres: PostgresResource
    ) -> dg.SensorResult | dg.SkipReason:
        engine = postgres.engine()
        production = registry.production_entry(engine)
        latest = registry.latest_evaluation(engine, production.version) if production else None
        fired = evaluate_triggers(production, count_interactions(engine), latest, limits)
        already = _fired_keys(context.cursor)
        new = [t for t in fired if t.key not in already]
        if not new:
            if fired:
                return dg.SkipReason(
                    "already requested for this production version: "
                    + "; ".join(f"{t.key} ({t.reason})" for t in fired)
                )
            return dg.SkipReason("no retraining condition holds")
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
