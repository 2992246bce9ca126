"""The daily run: snapshot the API for the day, rebuild core, evaluate and refresh what serves."""

from __future__ import annotations

from datetime import timezone

import dagster as dg

from moovitamix_assets.defs.recommendation.keys import DAILY_KEYS

DEFAULT_DAILY_CRON = "0 2 * * *"

# Every asset but the recommendation group's, plus its daily ones; training has its own job.
daily_refresh_job = dg.define_asset_job(
    name="daily_refresh",
    selection=(
        dg.AssetSelection.all().materializable() - dg.AssetSelection.groups("recommendation")
    )
    | dg.AssetSelection.assets(*DAILY_KEYS),
    description=(
        "Snapshot the MooVitamix API, rebuild the core layer for one day, then evaluate the "
        "production model and refresh every user's recommendations."
    ),
)


def build_daily_schedule(cron: str = DEFAULT_DAILY_CRON) -> dg.ScheduleDefinition:
    """Build the daily schedule for the day's own partition (UTC), running by default."""

    @dg.schedule(
        name="daily_refresh_schedule",
        cron_schedule=cron,
        execution_timezone="UTC",
        job=daily_refresh_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every day: snapshot the API for that UTC day and rebuild everything on it.",
    )
    def _daily_refresh_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        # The partition is the UTC day of the tick itself: the API only serves its current state.
        day = context.scheduled_execution_time.astimezone(timezone.utc).date().isoformat()
        return dg.RunRequest(run_key=day, partition_key=day)

    return _daily_refresh_schedule
