"""Retraining triggers without a daemon: the weekly cron tick, the growth and the decay sensor."""

from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from moovitamix_assets.cli import LOCAL_DAGSTER_YAML
from moovitamix_assets.definitions import defs
from moovitamix_assets.defs.core.assets import ensure_core_schema
from moovitamix_assets.defs.ingestion.schedule import daily_refresh_job
from moovitamix_assets.defs.recommendation import keys, registry
from moovitamix_assets.defs.recommendation.retraining import (
    DEFAULT_WEEKLY_RETRAINING_CRON,
    EXCLUSIVE_TAG,
    SENSOR_NAME,
    TRIGGER_TAG,
    RetrainingThresholds,
    build_retraining_sensor,
    build_weekly_retraining_schedule,
    evaluate_triggers,
    retraining_job,
    thresholds_from_env,
)
from moovitamix_assets.ml.artifacts import serialize_model
from moovitamix_assets.ml.models import AlsModel, AlsParams
from moovitamix_assets.ml.significance import Interval
from moovitamix_assets.warehouse.database import PostgresResource

DEPLOY_YAML = Path(__file__).resolve().parents[3] / "deploy" / "dagster.yaml"

AT_TRAINING = 0.05  # the production model's precision@10 when it was trained
THRESHOLDS = RetrainingThresholds(growth_share=0.2, max_relative_decay=0.25)


def set_interactions(engine: sa.Engine, count: int) -> None:
    ensure_core_schema(engine)
    with engine.begin() as conn:
        # core.user_track_interactions is a view of the active, known pairs.
        conn.execute(sa.text("TRUNCATE core.listen_pairs"))
        conn.execute(
            sa.text(
                "INSERT INTO core.listen_pairs (user_id, track_id, position, play_count, weight,"
                " list_length, first_seen, last_seen, is_active, user_known, track_known)"
                " SELECT g, 1, 1, 1, 1.0, 1, DATE '2026-11-20', DATE '2026-11-20', true, true,"
                " true FROM generate_series(1, :n) AS g"
            ),
            {"n": count},
        )


def add_model(engine: sa.Engine, interactions: int, *, promote: bool = True) -> int:
    """Register a trained model (promoted, or refused by its gate) on ``interactions``."""
    model = AlsModel(
        params=AlsParams(factors=1),
        user_ids=np.array([1], dtype=np.int64),
        item_ids=np.array([1], dtype=np.int64),
        user_factors=np.ones((1, 1), dtype=np.float32),
        item_factors=np.ones((1, 1), dtype=np.float32),
    )
    version = registry.register_candidate(
        engine,
        serialize_model(model),
        trained_at=datetime(2026, 11, 16, 4, tzinfo=timezone.utc),
        run_id=None,
        **registry.DataSnapshot(interactions, 1, 1, None)._asdict(),
        parameters={},
        metrics={"candidate": {"precision_at_k": AT_TRAINING}, "serving_version": None},
        gate_passed=promote,
        gate_reason="test",
        gate_figures={},
    )
    if promote:
        registry.promote(engine, version)
    return version


def daily_evaluation(engine: sa.Engine, version: int, mean: float, low: float, high: float) -> None:
    registry.record_evaluation(
        engine,
        version=version,
        evaluated_at=datetime.now(timezone.utc),
        data_interactions=1_000,
        metrics={
            "production": {"precision_at_k": mean},
            "interval": {"metric": "precision_at_k", "mean": mean, "low": low, "high": high},
        },
    )


def tick(
    postgres: PostgresResource,
    cursor: str | None = None,
    instance: dg.DagsterInstance | None = None,
) -> tuple[list[dg.RunRequest], str | None, str | None]:
    sensor = build_retraining_sensor(THRESHOLDS)
    with dg.DagsterInstance.ephemeral() as ephemeral:
        context = dg.build_sensor_context(
            resources={"postgres": postgres}, cursor=cursor, instance=instance or ephemeral
        )
        data = sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.cursor, data.skip_message


def test_growth_fires_once_per_training_attempt_and_rearms_after_a_refusal(
    postgres_resource: PostgresResource,
) -> None:
    engine = postgres_resource.engine()
    version = add_model(engine, interactions=1_000)
    set_interactions(engine, 1_150)
    requests, cursor, skip = tick(postgres_resource)
    assert requests == [] and "no retraining condition" in skip
    # The skip says why, in figures (the UI shows it on the tick).
    assert "interactions grew +15.0% (1000 -> 1150), < the 20% threshold" in skip
    assert "decay not evaluated: no daily evaluation" in skip

    set_interactions(engine, 1_250)
    requests, cursor, _ = tick(postgres_resource, cursor)
    assert [r.run_key for r in requests] == [f"growth:c{version}"]
    assert requests[0].tags[TRIGGER_TAG] == "growth"
    assert "+25.0%" in requests[0].tags["moovitamix/retraining_reason"]

    # The same condition is not requested again on every tick.
    set_interactions(engine, 1_400)
    again, cursor_after, skip = tick(postgres_resource, cursor)
    assert again == [] and "already requested" in skip and cursor_after in (None, cursor)

    # That run's candidate was refused at 1,400 interactions: the trigger re-arms from there,
    # and asks again once 20 % more listening could change the verdict.
    refused = add_model(engine, interactions=1_400, promote=False)
    assert registry.production_entry(engine).version == version
    assert tick(postgres_resource, cursor)[0] == []
    set_interactions(engine, 1_600)
    assert tick(postgres_resource, cursor)[0] == []
    set_interactions(engine, 1_700)
    requests, _, _ = tick(postgres_resource, cursor)
    assert [r.run_key for r in requests] == [f"growth:c{refused}"]


def test_decay_fires_only_when_the_interval_is_under_the_threshold(
    postgres_resource: PostgresResource,
) -> None:
    engine = postgres_resource.engine()
    set_interactions(engine, 1_000)
    version = add_model(engine, interactions=1_000)
    # 25 % under 0.05 is 0.0375: a point at 0.03 whose interval reaches 0.04 is noise.
    daily_evaluation(engine, version, 0.03, 0.02, 0.04)
    assert tick(postgres_resource)[0] == []

    daily_evaluation(engine, version, 0.03, 0.025, 0.035)
    requests, cursor, _ = tick(postgres_resource)
    assert [r.run_key for r in requests] == [f"decay:v{version}"]
    assert requests[0].tags[TRIGGER_TAG] == "decay"
    assert "upper bound < threshold 0.0375" in requests[0].tags["moovitamix/retraining_reason"]
    assert tick(postgres_resource, cursor)[0] == []


def test_before_any_training_a_first_candidate_is_asked_for_once(
    postgres_resource: PostgresResource,
) -> None:
    engine = postgres_resource.engine()
    # Nothing built yet: no core table, no registry.
    requests, _, skip = tick(postgres_resource)
    assert requests == [] and skip
    set_interactions(engine, 10)
    requests, cursor, _ = tick(postgres_resource)
    assert [r.run_key for r in requests] == ["growth:none"]
    assert tick(postgres_resource, cursor)[0] == []


def test_no_request_while_a_retraining_run_is_queued_or_running(
    postgres_resource: PostgresResource,
) -> None:
    set_interactions(postgres_resource.engine(), 10)
    with dg.DagsterInstance.ephemeral() as instance:
        run = dg.DagsterRun(job_name=retraining_job.name, status=dg.DagsterRunStatus.STARTED)
        instance.add_run(run)
        requests, _, skip = tick(postgres_resource, instance=instance)
        assert requests == [] and run.run_id in skip and "in progress" in skip
        instance.report_run_failed(run)
        requests, _, _ = tick(postgres_resource, instance=instance)
    assert [r.run_key for r in requests] == ["growth:none"]


@pytest.mark.parametrize("source", ["deploy", "local"])
def test_the_instance_runs_one_retraining_at_a_time(source: str) -> None:
    config = yaml.safe_load(DEPLOY_YAML.read_text() if source == "deploy" else LOCAL_DAGSTER_YAML)
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    exclusive = [limit for limit in limits if limit["key"] == EXCLUSIVE_TAG]
    assert exclusive == [
        {"key": EXCLUSIVE_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    assert retraining_job.tags[EXCLUSIVE_TAG] == retraining_job.name


def test_trigger_rules_on_plain_values() -> None:
    production = SimpleNamespace(
        version=3,
        name="als v3",
        data_interactions=1_000,
        metrics={"candidate": {"precision_at_k": 0.05}},
    )
    decayed = SimpleNamespace(
        metrics={
            "interval": {"metric": "precision_at_k", "mean": 0.01, "low": 0.005, "high": 0.015}
        }
    )
    both = evaluate_triggers(production, production, 1_300, decayed, THRESHOLDS, [])
    assert list(both) == ["growth:c3", "decay:v3"]
    assert "+30.0%" in both["growth:c3"] and both["growth:c3"].startswith("fired")
    assert "upper bound < threshold 0.0375" in both["decay:v3"]
    assert evaluate_triggers(production, production, None, decayed, THRESHOLDS, []) == {}
    absolute = RetrainingThresholds(growth_share=0.5, min_metric=0.005)
    not_fired: list[str] = []
    assert evaluate_triggers(production, production, 1_300, decayed, absolute, not_fired) == {}
    assert not_fired[0].startswith("growth not fired: interactions grew +30.0%")
    # The point is under the threshold but the interval reaches it: a dip inside the noise.
    assert "upper bound >= threshold 0.0050" in not_fired[1]
    # A point without an interval (an evaluation recorded before intervals) is its own bounds.
    point = SimpleNamespace(metrics={"production": {"precision_at_k": 0.01}})
    assert list(evaluate_triggers(production, None, 10, point, THRESHOLDS, [])) == [
        "growth:none",
        "decay:v3",
    ]
    assert evaluate_triggers(None, None, 0, None, THRESHOLDS, []) == {}
    assert Interval(0.01, 0.01, 0.01, 0.0).high == 0.01
    with pytest.raises(ValueError, match="growth_share"):
        RetrainingThresholds(growth_share=0)
    with pytest.raises(ValueError, match="max_relative_decay"):
        RetrainingThresholds(max_relative_decay=1)


def test_thresholds_come_from_the_environment() -> None:
    assert thresholds_from_env({}) == RetrainingThresholds()
    custom = thresholds_from_env(
        {
            "MOOVITAMIX_RETRAIN_GROWTH_SHARE": "0.5",
            "MOOVITAMIX_RETRAIN_MAX_DECAY": "0.1",
            "MOOVITAMIX_RETRAIN_MIN_METRIC": "0.02",
        }
    )
    assert (custom.growth_share, custom.max_relative_decay, custom.min_metric) == (0.5, 0.1, 0.02)


def test_the_weekly_cron_tick_requests_a_retraining_run() -> None:
    schedule = defs.get_schedule_def("weekly_retraining_schedule")
    assert schedule.cron_schedule == "0 4 * * 1"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == retraining_job.name
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 23, 4, 0, tzinfo=timezone.utc),
        repository_def=defs.get_repository_def(),
    )
    requests = list(
        build_weekly_retraining_schedule(DEFAULT_WEEKLY_RETRAINING_CRON)
        .evaluate_tick(context)
        .run_requests
        or []
    )
    assert [r.run_key for r in requests] == ["weekly:2026-11-23"]
    assert requests[0].tags[TRIGGER_TAG] == "weekly_cron"


def test_automation_is_wired_and_running_by_default() -> None:
    sensor = defs.get_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == retraining_job.name
    retraining = defs.resolve_job_def(retraining_job.name)
    assert set(retraining.asset_layer.executable_asset_keys) == {
        keys.EVALUATION_HOLDOUT,
        keys.CANDIDATE_MODEL,
        keys.PRODUCTION_MODEL,
        keys.PRODUCTION_MODEL_EVALUATION,
        keys.USER_RECOMMENDATIONS,
    }
    assert dg.AssetCheckKey(keys.CANDIDATE_MODEL, "promotion_gate") in (
        retraining.asset_layer.asset_graph.asset_check_keys
    )
    # The daily run refreshes recommendations after core, but never trains or promotes.
    daily = set(defs.resolve_job_def(daily_refresh_job.name).asset_layer.executable_asset_keys)
    assert set(keys.DAILY_KEYS) <= daily
    assert keys.CANDIDATE_MODEL not in daily and keys.PRODUCTION_MODEL not in daily
