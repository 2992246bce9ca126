"""The daily partitioning shared by every dated asset."""

from datetime import date, datetime, timezone

import dagster as dg

# First day the platform took snapshots; earlier dates never existed in the API's history.
SNAPSHOT_START_DATE = "2026-11-01"

# end_offset=1: today's (UTC) partition exists, so the nightly run snapshots the current day.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=SNAPSHOT_START_DATE,
    timezone="UTC",
    end_offset=1,
)

# The API serves only its current state: yesterday is still tolerated (a run that started just
# before midnight UTC, or a retry early in the morning), older dates would be mislabelled copies.
MAX_SNAPSHOT_AGE_DAYS = 1


class SnapshotDateError(ValueError):
    """A partition asks for API data the API can no longer serve."""


def utc_today() -> date:
    """Today's date on the UTC clock the API and the partitions share."""
    return datetime.now(timezone.utc).date()


def snapshot_date_for(partition_key: str, today: date | None = None) -> date:
    """Return the snapshot date of a partition, refusing dates the API cannot serve.

    Args:
        partition_key: The daily partition key, ``YYYY-MM-DD``.
        today: The current UTC date (injected by tests).

    Returns:
        The partition's date.

    Raises:
        SnapshotDateError: The date is more than one day in the past or in the future: storing
            today's API state under it would be a lie.
    """
    snapshot = date.fromisoformat(partition_key)
    today = today or utc_today()
    age = (today - snapshot).days
    if age > MAX_SNAPSHOT_AGE_DAYS:
        raise SnapshotDateError(
            f"Partition {partition_key} is {age} days old: the MooVitamix API serves only its "
            f"current state and past states cannot be fetched again, so a snapshot for "
            f"{partition_key} would store today's data under an old date. Materialize today's "
            f"partition ({today.isoformat()}) instead; past partitions can only be rebuilt from "
            f"the raw tables already stored."
        )
    if age < 0:
        raise SnapshotDateError(
            f"Partition {partition_key} is in the future (today is {today.isoformat()} UTC)."
        )
    return snapshot
