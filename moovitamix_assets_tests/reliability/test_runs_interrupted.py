"""Whole runs interrupted or doubled: the run's process SIGKILLed mid-load, two runs of one day at
once. Re-running (or the second run) must leave exactly the rows of an undisturbed run.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from moovitamix_assets.cli import DAGSTER
from moovitamix_assets_tests.reliability.harness import (
    VOLATILE_COLUMNS,
    WAIT_S,
    CopyGate,
    assert_same_contents,
    backends_copying,
    daily_resources,
    failure_text,
    run_day,
    scalar,
    table_contents,
    wait_until,
    waiting_for_advisory_lock,
)
from moovitamix_assets_tests.reliability.test_database_faults import Background, middle_user_id

pytestmark = [pytest.mark.faults, pytest.mark.http]

REPO = Path(__file__).resolve().parents[2]
FAULT_DEFINITIONS = "moovitamix_assets_tests.reliability.fault_definitions"
# The CLI imports Dagster and the code location before the first step: allow for a busy machine.
CLI_TIMEOUT_S = 120


def assert_users_untouched(baseline, url: str) -> None:
    """raw.users and its manifest row exactly as before; every other row the same data (steps
    that ran before the fault rewrote their partitions with identical rows)."""
    after = table_contents(url)
    assert after["raw.users"] == baseline.contents["raw.users"]

    def users_manifest(contents: dict[str, list[str]]) -> list[str]:
        return [r for r in contents["raw.snapshot_manifest"] if r.startswith("(users,")]

    assert users_manifest(after) == users_manifest(baseline.contents)
    assert_same_contents(baseline.stable_contents, table_contents(url, VOLATILE_COLUMNS))


def materialize_cli(api_url: str, database_url: str, day: str, home: Path) -> subprocess.Popen:
    """``dagster asset materialize`` of the daily assets in its own process group."""
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MOOVITAMIX_API_URL": api_url,
        "MOOVITAMIX_DATABASE_URL": database_url,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    cmd = [
        DAGSTER,
        "asset", "materialize",
        "-m", FAULT_DEFINITIONS,
        "--select", "*",
        "--partition", day,
    ]  # fmt: skip
    return subprocess.Popen(
        cmd,
        env=env,
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout_s: float) -> str:
    """Wait for a CLI process (killing its group after ``timeout_s``); return its output."""
    try:
        return process.communicate(timeout=timeout_s)[0]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate(timeout=WAIT_S)[0]
        raise AssertionError(f"dagster did not finish in {timeout_s}s: {output[-3000:]}") from None


def test_sigkill_during_a_load_then_rerun_gives_the_undisturbed_rows(
    baseline, warehouse, standin, tmp_path
):
    api = standin()
    gate = CopyGate(warehouse, "raw", "users", f"NEW.id = {middle_user_id(baseline.day)}")
    gate.install()
    killed = materialize_cli(api.base_url, warehouse, baseline.day, tmp_path / "home")
    try:
        wait_until(
            lambda: gate.held_backend() or killed.poll() is not None,
            "the run's COPY into raw.users",
            CLI_TIMEOUT_S,
        )
        assert killed.poll() is None, finish(killed, WAIT_S)[-3000:]
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
        finish(killed, WAIT_S)
    assert killed.returncode == -signal.SIGKILL
    # The orphaned backend still holds half a partition in its open transaction: invisible.
    assert_users_untouched(baseline, warehouse)
    # Let it read on: it finds its client gone and rolls back.
    gate.open()
    wait_until(lambda: backends_copying(warehouse) == 0, "the orphaned COPY to abort")
    assert_users_untouched(baseline, warehouse)

    gate.remove()
    rerun = materialize_cli(api.base_url, warehouse, baseline.day, tmp_path / "home")
    output = finish(rerun, CLI_TIMEOUT_S)
    assert rerun.returncode == 0, output[-4000:]
    assert_same_contents(baseline.stable_contents, table_contents(warehouse, VOLATILE_COLUMNS))


def test_two_runs_of_one_day_at_once_are_serialized(baseline, warehouse, standin):
    api = standin()
    gate = CopyGate(warehouse, "raw", "users", f"NEW.id = {middle_user_id(baseline.day)}")
    gate.install()
    first = Background(lambda: run_day(daily_resources(api.base_url, warehouse), baseline.day))
    gate.wait_held()
    second = Background(lambda: run_day(daily_resources(api.base_url, warehouse), baseline.day))
    # The second run reaches raw.users while the first one's COPY is open: it waits for the
    # table's advisory lock instead of deleting or adding rows next to it.
    wait_until(lambda: waiting_for_advisory_lock(warehouse) >= 1, "the second run to wait")
    assert_users_untouched(baseline, warehouse)
    gate.open()
    one, two = first.join(), second.join()
    assert one.success, failure_text(one)
    assert two.success, failure_text(two)
    assert_same_contents(baseline.stable_contents, table_contents(warehouse, VOLATILE_COLUMNS))
    # The second run committed raw.users last: the manifest row describes its read.
    assert (
        scalar(warehouse, "SELECT run_id FROM raw.snapshot_manifest WHERE endpoint = 'users'")
        == two.run_id
    )


def test_two_first_runs_on_an_empty_database_at_once(baseline, pg_url, standin):
    """Both create the schemas and tables: the DDL must not race (catalogue unique errors)."""
    api = standin()
    runs = [
        Background(lambda: run_day(daily_resources(api.base_url, pg_url), baseline.day))
        for _ in range(2)
    ]
    for run in runs:
        result = run.join()
        assert result.success, failure_text(result)
    assert_same_contents(baseline.stable_contents, table_contents(pg_url, VOLATILE_COLUMNS))
