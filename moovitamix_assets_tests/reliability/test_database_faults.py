"""PostgreSQL failing under a load: the backend killed mid-COPY, the server restarted mid-load.

A row trigger (``CopyGate``) holds the raw COPY in the middle of the partition, so the fault hits a
transaction that has already deleted the old partition and inserted part of the new one. The run
must fail, the stored data must be exactly as before, and the next run must succeed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from moovitamix_api import DataConfig, Dataset
from moovitamix_assets.defs.ingestion.tables import ensure_bookkeeping_tables
from moovitamix_assets.warehouse.database import dispose_engines
from moovitamix_assets.warehouse.embedded_postgres import (
    EmbeddedPostgres,
    discard_embedded_postgres,
    start_embedded_postgres,
    stop_embedded_postgres,
)
from moovitamix_assets_tests.reliability.harness import (
    DAILY_ASSETS,
    RECORDS,
    SEED,
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
)

pytestmark = [pytest.mark.faults, pytest.mark.http]

RAW_USERS = dg.AssetKey(["raw", "users"])


def middle_user_id(day: str) -> int:
    """The id of the 151st user the API lists: the COPY holds 150 new rows when it reaches it."""
    items, _ = Dataset(DataConfig(records=RECORDS, seed=SEED, day=day)).page("users", 2, 100)
    return items[50]["id"]


class Background:
    """``dg.materialize`` in a thread, its result (or exception) collected."""

    def __init__(self, target: Callable[[], dg.ExecuteInProcessResult]) -> None:
        self.result: dg.ExecuteInProcessResult | None = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = target()
            except BaseException as exc:  # asserted by the test
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> dg.ExecuteInProcessResult:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the run did not finish"
        assert self.error is None, self.error
        assert self.result is not None
        return self.result


def run_raw_users(base_url: str, database_url: str, day: str) -> Background:
    resources = daily_resources(base_url, database_url)
    return Background(
        lambda: dg.materialize(
            DAILY_ASSETS,
            selection=[RAW_USERS],
            resources=resources,
            partition_key=day,
            raise_on_error=False,
        )
    )


def test_backend_terminated_during_copy_leaves_the_partition_intact(baseline, warehouse, standin):
    api = standin()
    gate = CopyGate(warehouse, "raw", "users", f"NEW.id = {middle_user_id(baseline.day)}")
    gate.install()
    run = run_raw_users(api.base_url, warehouse, baseline.day)
    pid = gate.wait_held()
    assert scalar(warehouse, "SELECT pg_terminate_backend(%s)", (pid,))
    result = run.join()
    assert not result.success
    message = failure_text(result)
    assert 'handling output "raw__users" of step "raw_snapshots"' in message
    assert "OperationalError" in message  # the connection's own words vary with the timing
    assert_same_contents(baseline.contents, table_contents(warehouse))

    gate.remove()
    again = run_day(daily_resources(api.base_url, warehouse), baseline.day)
    assert again.success, failure_text(again)
    assert_same_contents(baseline.stable_contents, table_contents(warehouse, VOLATILE_COLUMNS))


def test_first_load_dropped_before_commit_leaves_no_table(pg_url, standin, baseline):
    """The very first load: raw.users is created, filled, and its manifest row is being written
    when the connection drops. Nothing of it may remain, not even the empty table."""
    api = standin()
    engine = sa.create_engine(pg_url)
    ensure_bookkeeping_tables(engine)  # as the asset does before its write
    engine.dispose()
    gate = CopyGate(pg_url, "raw", "snapshot_manifest", "NEW.endpoint = 'users'").install()
    run = run_raw_users(api.base_url, pg_url, baseline.day)
    pid = gate.wait_held()
    # The users rows are all sent and the table exists inside the open transaction.
    assert scalar(pg_url, "SELECT to_regclass('raw.users') IS NULL")
    assert scalar(pg_url, "SELECT pg_terminate_backend(%s)", (pid,))
    assert not run.join().success
    assert scalar(pg_url, "SELECT to_regclass('raw.users') IS NULL")
    assert table_contents(pg_url) == {"raw.rejects": [], "raw.snapshot_manifest": []}

    gate.remove()
    again = run_day(daily_resources(api.base_url, pg_url), baseline.day)
    assert again.success, failure_text(again)
    assert_same_contents(baseline.stable_contents, table_contents(pg_url, VOLATILE_COLUMNS))


class OwnServer:
    """An embedded PostgreSQL of the test's own, in a tmp state folder, that can be restarted."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.server: EmbeddedPostgres | None = None

    def start(self) -> str:
        """Start (or start again, on the same data) and return the warehouse URL."""
        self.server = start_embedded_postgres(self.state, ("warehouse",), durable_init=False)
        return self.server.url("warehouse")

    def stop(self) -> None:
        """A fast shutdown: PostgreSQL terminates every backend and aborts open transactions."""
        assert self.server is not None
        stop_embedded_postgres(self.server)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnServer]:
    own = OwnServer(tmp_path / "state")
    yield own
    dispose_engines()
    if own.server is not None:
        discard_embedded_postgres(own.state)


def test_postgres_restarted_mid_load(own_server, standin, baseline):
    api = standin()
    url = own_server.start()
    first = run_day(daily_resources(api.base_url, url), baseline.day)
    assert first.success, failure_text(first)
    before = table_contents(url)
    gate = CopyGate(url, "raw", "users", f"NEW.id = {middle_user_id(baseline.day)}").install()
    run = run_raw_users(api.base_url, url, baseline.day)
    gate.wait_held()
    own_server.stop()
    result = run.join()
    assert not result.success
    assert own_server.start() == url
    assert backends_copying(url) == 0
    assert_same_contents(before, table_contents(url))

    # The next run, in the same process: its pooled connections died with the server.
    gate.remove()
    again = run_day(daily_resources(api.base_url, url), baseline.day)
    assert again.success, failure_text(again)
    assert_same_contents(table_contents(url, VOLATILE_COLUMNS), baseline.stable_contents)
