from datetime import date

import pytest

from moovitamix_assets.partitions import SnapshotDateError, daily_partitions, snapshot_date_for


def test_today_and_yesterday_are_fetchable():
    today = date(2026, 11, 28)
    assert snapshot_date_for("2026-11-28", today) == today
    assert snapshot_date_for("2026-11-27", today) == date(2026, 11, 27)


def test_an_older_partition_is_refused_with_the_reason():
    with pytest.raises(SnapshotDateError) as err:
        snapshot_date_for("2026-11-20", date(2026, 11, 28))
    message = str(err.value)
    assert "2026-11-20" in message
    assert "8 days old" in message
    assert "past states cannot be fetched again" in message


def test_a_future_partition_is_refused():
    with pytest.raises(SnapshotDateError, match="in the future"):
        snapshot_date_for("2026-11-29", date(2026, 11, 28))


def test_the_current_day_partition_exists():
    from datetime import datetime, timezone

    keys = daily_partitions.get_partition_keys(
        current_time=datetime(2026, 11, 28, 0, 30, tzinfo=timezone.utc)
    )
    assert keys[-1] == "2026-11-28"
