from datetime import date, datetime, timezone

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


def test_the_first_day_is_configured_or_recorded_once(tmp_path, monkeypatch) -> None:
    from moovitamix_assets import partitions

    monkeypatch.setenv("MOOVITAMIX_FIRST_DAY", "2026-12-01")
    assert partitions.first_day() == "2026-12-01"
    monkeypatch.setenv("MOOVITAMIX_FIRST_DAY", "yesterday")
    with pytest.raises(ValueError, match="MOOVITAMIX_FIRST_DAY must be a date"):
        partitions.first_day()

    # Unset: the day of installation, recorded in the state folder on the first load and kept.
    monkeypatch.delenv("MOOVITAMIX_FIRST_DAY")
    monkeypatch.setenv("MOOVITAMIX_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(partitions, "utc_today", lambda: date(2026, 12, 6))
    assert partitions.first_day() == "2026-12-06"
    assert (tmp_path / "first_day").read_text().strip() == "2026-12-06"
    monkeypatch.setattr(partitions, "utc_today", lambda: date(2026, 12, 9))
    assert partitions.first_day() == "2026-12-06"


def test_no_partition_before_the_first_day_is_offered() -> None:
    from datetime import datetime, timezone

    keys = daily_partitions.get_partition_keys(
        current_time=datetime(2026, 12, 6, 3, tzinfo=timezone.utc)
    )
    assert keys[0] == "2024-01-01"  # MOOVITAMIX_FIRST_DAY of the test session


def test_the_definitions_load_without_a_configured_first_day(tmp_path) -> None:
    """A fresh clone: no MOOVITAMIX_FIRST_DAY, no state folder yet."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MOOVITAMIX_FIRST_DAY"}
    env["MOOVITAMIX_STATE_DIR"] = str(tmp_path)
    code = "from moovitamix_assets.definitions import defs; print(defs is not None)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "first_day").read_text().strip() == str(datetime.now(timezone.utc).date())
