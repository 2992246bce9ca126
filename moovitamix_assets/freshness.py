"""Freshness policies that match the daily schedule."""

from datetime import timedelta

import dagster as dg

# Every daily asset is rebuilt once a day by the nightly run. Warn when a day has passed plus an
# hour of run time, fail when the nightly run is clearly missing (a day plus three hours), so a
# run that is merely slow does not page anyone but a skipped night does.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=27),
    warn_window=timedelta(hours=25),
)

# Models are retrained weekly; a model older than eight days means the weekly retraining stopped.
WEEKLY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(days=8),
    warn_window=timedelta(days=7, hours=3),
)
