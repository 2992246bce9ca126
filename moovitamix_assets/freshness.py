"""Freshness policies that match the daily schedule."""

from datetime import timedelta

import dagster as dg

# Every daily asset is rebuilt by the nightly run: warn after a day plus an hour of run time, fail
# after a day plus three hours, so a slow run pages no one but a skipped night does.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=27),
    warn_window=timedelta(hours=25),
)

# Models are retrained weekly; a model older than eight days means the weekly retraining stopped.
WEEKLY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(days=8),
    warn_window=timedelta(days=7, hours=3),
)
