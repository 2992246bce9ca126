"""The daily partitioning shared by every dated asset."""

import os
from contextlib import suppress
from datetime import date, datetime, timezone

import dagster as dg

from moovitamix_assets.warehouse.embedded_postgres import state_dir

FIRST_DAY_ENV = "MOOVITAMIX_FIRST_DAY"


def utc_today() -> date:
    """Today's date on the UTC clock the API and the partitions share."""
    return datetime.now(timezone.utc).date()


def first_day() -> str:
    """The first daily partition: ``MOOVITAMIX_FIRST_DAY``, else the day the definitions first
    loaded here, kept in ``<state dir>/first_day`` (no earlier day can be filled: no past state)."""
    if configured := os.environ.get(FIRST_DAY_ENV):
        try:
            return date.fromisoformat(configured).isoformat()
        except ValueError:
            message = f"{FIRST_DAY_ENV} must be a date YYYY-MM-DD, got {configured!r}"
            raise ValueError(message) from None
    marker = state_dir() / "first_day"
    with suppress(OSError, ValueError):
        return date.fromisoformat(marker.read_text().strip()).isoformat()
    today = utc_today().isoformat()
    # Best effort: a read-only checkout still loads, with today as its first day.
    with suppress(OSError):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(today + "\n")
    return today


# end_offset=1: today's (UTC) partition exists, so the nightly run snapshots the current day.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=first_day(), timezone="UTC", end_offset=1
)

# Yesterday is tolerated (a run started before midnight UTC, an early retry); older days are not.
MAX_SNAPSHOT_AGE_DAYS = 1


class SnapshotDateError(ValueError):
    """A partition asks for API data the API can no longer serve."""


def snapshot_date_for(partition_key: str, today: date | None = None) -> date:
    """The date of a daily partition key; SnapshotDateError when older than yesterday or in the
    future, as storing today's API state under it would be a lie."""
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
