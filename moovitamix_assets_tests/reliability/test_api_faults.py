"""The daily run under API faults: it succeeds with the right data, or fails naming the cause and
leaves every warehouse table exactly as the first day left it.

Each test starts from a copy of a database holding one successful day (raw and core) and re-runs
that same partition against the same stand-in data, with one fault switched on.
"""

from __future__ import annotations

import threading

import pytest

from moovitamix_assets_tests.reliability.harness import (
    RECORDS,
    VOLATILE_COLUMNS,
    assert_same_contents,
    daily_resources,
    failure_text,
    metadata_of,
    run_day,
    scalar,
    step_starts,
    table_contents,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.http]

RAW_NODES = ("raw/users", "raw/tracks", "raw/listen_history")
ENDPOINTS = ("users", "tracks", "listen_history")
KEY = {"users": "id", "tracks": "id", "listen_history": "user_id"}


def assert_unchanged(baseline, warehouse: str) -> None:
    """Every table of raw and core, every column, exactly as before the run."""
    assert_same_contents(baseline.contents, table_contents(warehouse))


def assert_not_read_after_users(api) -> None:
    """The step stopped at /users: no request reached the endpoints read after it."""
    stats = api.stats()
    assert all(stats.get(e, {}).get("requests", 0) == 0 for e in ("tracks", "listen_history"))


def assert_rewritten_identically(baseline, warehouse: str, result) -> None:
    """The run rewrote the day (its run id is on every manifest row) with the same rows."""
    assert_same_contents(baseline.stable_contents, table_contents(warehouse, VOLATILE_COLUMNS))
    run_ids = scalar(warehouse, "SELECT array_agg(DISTINCT run_id) FROM raw.snapshot_manifest")
    assert run_ids == [result.run_id]


def test_api_down_for_the_whole_run_fails_before_any_step(baseline, warehouse, standin):
    api = standin()
    api.stop()
    result = run_day(daily_resources(api.base_url, warehouse), baseline.day)
    assert not result.success
    message = failure_text(result)
    assert "MOOVITAMIX_API_URL" in message and api.base_url in message
    assert "cannot connect" in message
    assert step_starts(result) == []
    assert_unchanged(baseline, warehouse)


def test_api_down_for_a_few_seconds_mid_read_is_retried(baseline, warehouse, standin):
    api = standin(latency_ms=30)
    outages: list[float] = []

    def restart_once_reading() -> None:
        wait_until(lambda: sum(s["requests"] for s in api.stats().values()) >= 2, "the read")
        api.restart(down_for_s=1.0)
        outages.append(1.0)

    watcher = threading.Thread(target=restart_once_reading, daemon=True)
    watcher.start()
    # Backoffs of 0.2, 0.4, 0.8, 1.6 and 3.2 s outlast a one-second outage.
    resources = daily_resources(api.base_url, warehouse, backoff_factor=0.2, backoff_max=5.0)
    result = run_day(resources, baseline.day)
    watcher.join(10)
    assert outages == [1.0]
    assert result.success, failure_text(result)
    assert sum(metadata_of(result, node)["retries"] for node in RAW_NODES) >= 1
    assert_rewritten_identically(baseline, warehouse, result)


def test_5xx_and_429_bursts_are_retried_and_counted(baseline, warehouse, standin):
    api = standin(
        fail_first_n=3,
        endpoint_faults={"users": {"fail_first_n": 1, "rate_limit_first_n": 2, "retry_after_s": 1}},
    )
    result = run_day(daily_resources(api.base_url, warehouse), baseline.day)
    assert result.success, failure_text(result)
    for node in RAW_NODES:
        metadata = metadata_of(result, node)
        assert metadata["retries"] == 3, node
        assert metadata["requests"] == 3, node  # pages; retries are attempts within a request
    stats = api.stats()
    assert stats["users"]["statuses"] == {"200": 3, "429": 2, "500": 1}
    assert stats["tracks"]["statuses"] == {"200": 3, "500": 2, "503": 1}
    assert_rewritten_identically(baseline, warehouse, result)


def test_persistent_5xx_fails_naming_endpoint_and_page(baseline, warehouse, standin):
    api = standin(fail_first_n=1000)
    result = run_day(daily_resources(api.base_url, warehouse, max_retries=2), baseline.day)
    assert not result.success
    message = failure_text(result)
    # The endpoints are read in order in one step: the first failure stops it, named.
    assert "endpoint 'users', page 1: too many" in message
    assert_not_read_after_users(api)
    assert_unchanged(baseline, warehouse)


def test_persistently_slow_page_fails_naming_endpoint_and_page(baseline, warehouse, standin):
    api = standin(slow_pages={2: 3.0})
    resources = daily_resources(api.base_url, warehouse, read_timeout=0.5, max_retries=1)
    result = run_day(resources, baseline.day)
    assert not result.success
    message = failure_text(result)
    assert "endpoint 'users', page 2: read timed out" in message
    assert_not_read_after_users(api)
    assert_unchanged(baseline, warehouse)


def test_truncated_body_fails_naming_endpoint_and_page(baseline, warehouse, standin):
    api = standin(truncated_pages=[3])
    result = run_day(daily_resources(api.base_url, warehouse), baseline.day)
    assert not result.success
    message = failure_text(result)
    assert "endpoint 'users', page 3: body is not valid JSON" in message
    assert "truncated?" in message
    assert_not_read_after_users(api)
    assert_unchanged(baseline, warehouse)


@pytest.mark.parametrize("every", [0, 2], ids=["changes-once", "keeps-changing"])
def test_total_changing_mid_read_stops_the_endpoint_loudly(baseline, warehouse, standin, every):
    api = standin(total_drift=5, total_drift_after=1, total_drift_every=every)
    result = run_day(daily_resources(api.base_url, warehouse), baseline.day)
    assert not result.success
    message = failure_text(result)
    assert "endpoint 'users', page" in message
    assert f"total {RECORDS} -> {RECORDS + 5}" in message
    assert "nothing of this endpoint was stored" in message
    # /users was read once from page 1 (a mix of two states is never stored); the step stopped.
    assert api.stats()["users"]["pages"]["1"] == 1
    assert_not_read_after_users(api)
    assert_unchanged(baseline, warehouse)


def test_record_missing_a_field_is_rejected_and_neighbours_load(baseline, warehouse, standin):
    api = standin(malformed_records=[(2, 3, "missing_field")])
    result = run_day(daily_resources(api.base_url, warehouse), baseline.day)
    assert result.success, failure_text(result)
    after = table_contents(warehouse)
    for endpoint, node in zip(ENDPOINTS, RAW_NODES, strict=True):
        metadata = metadata_of(result, node)
        assert (metadata["rejected_records"], metadata["dagster/row_count"]) == (1, RECORDS - 1)
        # The read reports the missing key; the stored rows have no drift, so the schema audit
        # lets core merge the day (the reject is judged by the reject-rate audit).
        assert metadata["missing_fields"] == KEY[endpoint]
        manifest_drift = scalar(
            warehouse,
            "SELECT missing_fields FROM raw.snapshot_manifest WHERE endpoint = %s",
            (endpoint,),
        )
        assert manifest_drift == []
        # Exactly the rejected record is missing from the partition; its neighbours are intact.
        table = f"raw.{endpoint}"
        gone = set(baseline.contents[table]) - set(after[table])
        assert len(gone) == 1 and set(after[table]) < set(baseline.contents[table]), endpoint
        reject = scalar(
            warehouse,
            "SELECT ARRAY[page::text, position::text, field, reason, record] FROM raw.rejects "
            "WHERE endpoint = %s AND snapshot_date = %s",
            (endpoint, baseline.day),
        )
        assert reject[:4] == ["2", "3", KEY[endpoint], "required field is missing"], endpoint
        # The stored reject is the record the API sent (its timestamps are in the lost row).
        created_at = reject[4].split('"created_at": "')[1].split('"')[0]
        assert created_at.replace("T", " ") in next(iter(gone)), endpoint
    assert scalar(warehouse, "SELECT count(*) FROM raw.rejects") == 3
    assert {e.asset_key.path[0] for e in result.get_asset_materialization_events()} == {
        "raw", "core",
    }  # fmt: skip


def test_an_endpoint_failing_stops_the_step_naming_it_and_keeps_its_stored_day(
    baseline, warehouse, standin
):
    # The raw endpoints are one step, read in order: /tracks keeps failing.
    api = standin(endpoint_faults={"tracks": {"fail_first_n": 50}})
    resources = daily_resources(api.base_url, warehouse, max_retries=1, backoff_factor=0.01)
    result = run_day(resources, baseline.day)
    assert not result.success
    message = failure_text(result)
    assert "endpoint 'tracks'" in message
    assert "error responses" in message  # urllib3: "too many 500 (or 503) error responses"
    manifest = dict(
        scalar(
            warehouse,
            "SELECT array_agg(ARRAY[endpoint, run_id] ORDER BY endpoint) "
            "FROM raw.snapshot_manifest",
        )
    )
    # The endpoint read before the failing one was stored by this run...
    assert manifest["users"] == result.run_id
    # ...the failing one and the one after it keep the first day's snapshot, untouched.
    assert result.run_id not in (manifest["tracks"], manifest["listen_history"])
    raw = table_contents(warehouse, schemas=("raw",))
    for table in ("raw.tracks", "raw.listen_history"):
        assert raw[table] == baseline.contents[table]
