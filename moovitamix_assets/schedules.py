"""The nightly schedule that keeps the platform current without anyone touching it."""

from __future__ import annotations

from datetime import timezone

import dagster as dg

from moovitamix_assets.jobs import daily_refresh_job

DEFAULT_DAILY_CRON = "0 2 * * *"
SCHEDULE_TIMEZONE = "UTC"


def build_daily_schedule(cron: str = DEFAULT_DAILY_CRON) -> dg.ScheduleDefinition:
    """Build the daily schedule for the day's own partition (UTC), running by default."""

    @dg.schedule(
        name="daily_refresh_schedule",
        cron_schedule=cron,
        execution_timezone=SCHEDULE_TIMEZONE,
        job=daily_refresh_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every day: snapshot the API for that UTC day and rebuild everything on it.",
    )
    def _daily_refresh_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        # The partition is the UTC day of the tick itself: the API only serves its current state.
        day = context.scheduled_execution_time.astimezone(timezone.utc).date().isoformat()
        return dg.RunRequest(run_key=day, partition_key=day)

    return _daily_refresh_schedule
