"""The nightly refresh and the weekly retraining: the platform stays current unattended."""

from __future__ import annotations

from datetime import timezone

import dagster as dg

from moovitamix_assets.jobs import daily_refresh_job, retraining_job

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


DEFAULT_WEEKLY_RETRAINING_CRON = "0 4 * * 1"


def build_weekly_retraining_schedule(
    cron: str = DEFAULT_WEEKLY_RETRAINING_CRON,
) -> dg.ScheduleDefinition:
    """Build the weekly retraining schedule (UTC, Mondays 04:00 by default), running by default.

    04:00 leaves the 02:00 daily run time to finish, so the candidate learns from that day's core.
    """

    @dg.schedule(
        name="weekly_retraining_schedule",
        cron_schedule=cron,
        execution_timezone=SCHEDULE_TIMEZONE,
        job=retraining_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every week: train a candidate model and promote it if its gate passes.",
    )
    def _weekly_retraining_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = context.scheduled_execution_time.astimezone(timezone.utc).date().isoformat()
        return dg.RunRequest(
            run_key=f"weekly:{day}",
            tags={"moovitamix/retraining_trigger": "weekly_cron"},
        )

    return _weekly_retraining_schedule
