"""Retraining triggers without a daemon: the weekly cron tick, the growth and the decay sensor."""

from datetime import datetime, timezone

import dagster as dg
import numpy as np
import pytest
import sqlalchemy as sa

from moovitamix_assets.assets.recommendation import keys, registry
from moovitamix_assets.definitions import defs
from moovitamix_assets.defs.core.assets import ensure_core_schema
from moovitamix_assets.jobs import daily_refresh_job, retraining_job
from moovitamix_assets.ml.artifacts import serialize_model
from moovitamix_assets.ml.models import AlsModel, AlsParams
from moovitamix_assets.resources.database import PostgresResource
from moovitamix_assets.schedules import build_weekly_retraining_schedule
from moovitamix_assets.sensors.retraining import (
    SENSOR_NAME,
    TRIGGER_TAG,
    RetrainingThresholds,
    build_retraining_sensor,
    evaluate_triggers,
    thresholds_from_env,
)

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


def add_production_model(engine: sa.Engine, interactions: int) -> int:
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
        snapshot=registry.DataSnapshot(interactions, 1, 1, None),
        parameters={},
        metrics={"candidate": {"precision_at_k": AT_TRAINING}, "production_version": None},
        gate_passed=True,
        gate_reason="promoted: test",
        gate_figures={},
    )
    registry.promote(engine, version)
    return version


def daily_evaluation(engine: sa.Engine, version: int, precision: float) -> None:
    registry.record_evaluation(
        engine,
        version,
        evaluated_at=datetime.now(timezone.utc),
        run_id=None,
        snapshot=registry.DataSnapshot(1_000, 1, 1, None),
        metrics={"production": {"precision_at_k": precision}},
    )


def tick(
    postgres: PostgresResource, cursor: str | None = None
) -> tuple[list[dg.RunRequest], str | None, str | None]:
    sensor = build_retraining_sensor(THRESHOLDS)
    context = dg.build_sensor_context(resources={"postgres": postgres}, cursor=cursor)
    data = sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.cursor, data.skip_message


def test_growth_fires_once_per_production_version(postgres_resource: PostgresResource) -> None:
    engine = postgres_resource.engine()
    version = add_production_model(engine, interactions=1_000)
    set_interactions(engine, 1_150)
    requests, cursor, skip = tick(postgres_resource)
    assert requests == [] and "no retraining condition" in skip

    set_interactions(engine, 1_250)
    requests, cursor, _ = tick(postgres_resource, cursor)
    assert [r.run_key for r in requests] == [f"growth:v{version}"]
    assert requests[0].tags[TRIGGER_TAG] == "growth"
    assert "+25.0%" in requests[0].tags["moovitamix/retraining_reason"]

    # The same condition on the same production model is not requested again.
    set_interactions(engine, 1_400)
    again, cursor_after, skip = tick(postgres_resource, cursor)
    assert again == [] and "already requested" in skip and cursor_after in (None, cursor)

    # A new production model re-arms the trigger, against its own snapshot.
    newer = add_production_model(engine, interactions=1_400)
    assert tick(postgres_resource, cursor)[0] == []
    set_interactions(engine, 1_700)
    requests, _, _ = tick(postgres_resource, cursor)
    assert [r.run_key for r in requests] == [f"growth:v{newer}"]


def test_decay_fires_when_the_daily_evaluation_falls_under_the_threshold(
    postgres_resource: PostgresResource,
) -> None:
    engine = postgres_resource.engine()
    set_interactions(engine, 1_000)
    version = add_production_model(engine, interactions=1_000)
    # 25 % under 0.05 is 0.0375: 0.04 holds, 0.03 has decayed.
    daily_evaluation(engine, version, 0.04)
    assert tick(postgres_resource)[0] == []

    daily_evaluation(engine, version, 0.03)
    requests, cursor, _ = tick(postgres_resource)
    assert [r.run_key for r in requests] == [f"decay:v{version}"]
    assert requests[0].tags[TRIGGER_TAG] == "decay"
    assert "0.0300 < threshold 0.0375" in requests[0].tags["moovitamix/retraining_reason"]
    assert tick(postgres_resource, cursor)[0] == []


def test_no_production_model_asks_for_a_first_one_once(
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


def test_trigger_rules_on_plain_values() -> None:
    production = registry.RegistryEntry(
        version=3,
        status="production",
        trained_at=datetime(2026, 11, 16, tzinfo=timezone.utc),
        run_id=None,
        snapshot=registry.DataSnapshot(1_000, 1, 1, None),
        parameters={},
        metrics={"candidate": {"precision_at_k": 0.05}},
        gate_passed=True,
        gate_reason="",
    )
    decayed = registry.Evaluation(
        3, datetime.now(timezone.utc), production.snapshot, {"production": {"precision_at_k": 0.01}}
    )
    both = evaluate_triggers(production, 1_300, decayed, THRESHOLDS)
    assert [t.key for t in both] == ["growth:v3", "decay:v3"]
    assert evaluate_triggers(production, None, decayed, THRESHOLDS) == []
    absolute = RetrainingThresholds(growth_share=0.5, min_metric=0.005)
    assert evaluate_triggers(production, 1_300, decayed, absolute) == []
    with pytest.raises(ValueError):
        RetrainingThresholds(growth_share=0)


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
    requests = list(build_weekly_retraining_schedule().evaluate_tick(context).run_requests or [])
    assert [r.run_key for r in requests] == ["weekly:2026-11-23"]
    assert requests[0].tags[TRIGGER_TAG] == "weekly_cron"


def test_automation_is_wired_and_running_by_default() -> None:
    sensor = defs.get_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == retraining_job.name
    retraining = defs.resolve_job_def(retraining_job.name)
    assert set(retraining.asset_layer.executable_asset_keys) == set(keys.RETRAINING_KEYS)
    assert dg.AssetCheckKey(keys.CANDIDATE_MODEL, "promotion_gate") in (
        retraining.asset_layer.asset_graph.asset_check_keys
    )
    # The daily run refreshes recommendations after core, but never trains or promotes.
    daily = set(defs.resolve_job_def(daily_refresh_job.name).asset_layer.executable_asset_keys)
    assert set(keys.DAILY_KEYS) <= daily
    assert keys.CANDIDATE_MODEL not in daily and keys.PRODUCTION_MODEL not in daily
