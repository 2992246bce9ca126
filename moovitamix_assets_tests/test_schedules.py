from datetime import datetime, timezone

import dagster as dg

from moovitamix_assets.definitions import defs
from moovitamix_assets.defs.ingestion.schedule import build_daily_schedule, daily_refresh_job


def test_daily_schedule_defaults():
    schedule = defs.get_schedule_def("daily_refresh_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == daily_refresh_job.name


def test_the_tick_requests_its_own_utc_day():
    schedule = build_daily_schedule()
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc),
        repository_def=defs.get_repository_def(),
    )
    requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert [r.partition_key for r in requests] == ["2026-11-28"]
    assert requests[0].run_key == "2026-11-28"


def test_the_cron_is_configurable_and_a_late_tick_keeps_its_day():
    schedule = build_daily_schedule("30 23 * * *")
    assert schedule.cron_schedule == "30 23 * * *"
    # A tick late in the UTC day still asks for that day, whatever the machine's local zone.
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 28, 23, 30, tzinfo=timezone.utc),
        repository_def=defs.get_repository_def(),
    )
    requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert [r.partition_key for r in requests] == ["2026-11-28"]


def test_the_daily_job_covers_raw_and_core():
    job = defs.resolve_job_def(daily_refresh_job.name)
    keys = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert {"raw/users", "raw/tracks", "raw/listen_history"} <= keys
    assert {
        "core/users",
        "core/tracks",
        "core/listen_events",
        "core/user_track_interactions",
    } <= keys
