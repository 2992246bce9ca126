"""Check-failure alerts: real ephemeral-disk instance, real checks, real HTTP receiver."""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    Definitions,
    asset,
    asset_check,
    build_sensor_context,
    materialize,
)

from moovitamix_assets.alerts import AlertNotifier
from moovitamix_assets.defs.monitoring.sensors import (
    asset_check_failure_alert_sensor,
    observed_and_expected,
)
from moovitamix_assets_tests.defs.monitoring import slow_run
from moovitamix_assets_tests.defs.monitoring import toy_definitions as toy
from moovitamix_assets_tests.defs.monitoring.http_receiver import (
    RecordingHttpServer,
    closed_port_url,
)

UI = "http://dagster.test:3000"


@pytest.fixture
def receiver() -> Iterator[RecordingHttpServer]:
    with RecordingHttpServer() as server:
        yield server


def tick(instance: DagsterInstance, cursor: str | None, notifier: AlertNotifier) -> str | None:
    """One sensor evaluation, as the daemon does it; returns the cursor it persists."""
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=toy.defs,
        resources={"alert_notifier": notifier},
    )
    return asset_check_failure_alert_sensor.evaluate_tick(context).cursor


def run_checks(instance: DagsterInstance, partition: str) -> str:
    result = materialize(
        [toy.listens, toy.listens_not_empty, toy.listens_volume_warning, toy.listens_shape],
        instance=instance,
        partition_key=partition,
        raise_on_error=False,
    )
    return result.run_id


def test_observed_and_expected_from_metadata() -> None:
    assert observed_and_expected({"observed": 0, "threshold": 1}) == ("0", "1")
    assert observed_and_expected({"observed": 3.5, "expected": "<= 2"}) == ("3.5", "<= 2")
    summary, expected = observed_and_expected({"nulls": 3, "cols": "a,b"})
    assert (summary, expected) == ("nulls=3, cols=a,b", None)
    assert observed_and_expected({}) == (None, None)


def test_one_message_per_failed_error_check(
    instance: DagsterInstance, receiver: RecordingHttpServer
) -> None:
    notifier = AlertNotifier(webhook_url=f"{receiver.url}/hook", ui_base_url=UI)
    cursor = tick(instance, None, notifier)  # first tick: starts from now

    # 2026-04-08 has rows: only the WARN check fails, which must not alert.
    run_checks(instance, "2026-04-08")
    cursor = tick(instance, cursor, notifier)
    assert receiver.requests == []

    # 2026-04-09 is empty: two ERROR checks fail (and the WARN one again).
    run_id = run_checks(instance, "2026-04-09")
    cursor = tick(instance, cursor, notifier)

    bodies = receiver.json_bodies()
    assert len(bodies) == 2
    by_check = {
        name: body["text"]
        for body in bodies
        for name in ("listens_not_empty", "listens_shape")
        if f"Check {name} failed" in body["text"]
    }
    assert set(by_check) == {"listens_not_empty", "listens_shape"}
    not_empty = by_check["listens_not_empty"]
    assert "Asset: toy/listens" in not_empty
    assert "Partition: 2026-04-09" in not_empty
    assert "Observed: 0" in not_empty
    assert "Expected: 1" in not_empty
    assert f"Link: {UI}/runs/{run_id}" in not_empty
    # Without observed/expected keys the metadata is summarised.
    assert "null_user_ids=3" in by_check["listens_shape"]
    assert "columns=user_id,track_id" in by_check["listens_shape"]
    assert all("volume_warning" not in body["text"] for body in bodies)

    # Re-evaluating with the persisted cursor sends nothing new, however often.
    for _ in range(2):
        cursor = tick(instance, cursor, notifier)
    assert len(receiver.requests) == 2

    # A later failure is alerted once more, and only it.
    second_run = run_checks(instance, "2026-04-09")
    tick(instance, cursor, notifier)
    assert len(receiver.requests) == 4
    assert all(second_run in body["text"] for body in receiver.json_bodies()[2:])


def test_first_tick_does_not_replay_history(
    instance: DagsterInstance, receiver: RecordingHttpServer
) -> None:
    run_checks(instance, "2026-04-09")
    notifier = AlertNotifier(webhook_url=receiver.url, ui_base_url=UI)

    cursor = tick(instance, None, notifier)
    tick(instance, cursor, notifier)

    assert receiver.requests == []
    assert json.loads(cursor)["watermark"] > 0


def test_dead_receiver_does_not_raise_and_is_not_resent(
    instance: DagsterInstance, receiver: RecordingHttpServer
) -> None:
    dead = AlertNotifier(webhook_url=closed_port_url(), ui_base_url=UI, max_retries=0)
    cursor = tick(instance, None, dead)
    run_checks(instance, "2026-04-09")

    cursor = tick(instance, cursor, dead)  # delivery fails: logged, no exception

    live = AlertNotifier(webhook_url=receiver.url, ui_base_url=UI)
    tick(instance, cursor, live)
    assert receiver.requests == []


def test_without_webhook_the_tick_logs_the_alerts(instance: DagsterInstance) -> None:
    notifier = AlertNotifier(ui_base_url=UI)
    cursor = tick(instance, None, notifier)
    run_checks(instance, "2026-04-09")

    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=toy.defs,
        resources={"alert_notifier": notifier},
    )
    result = asset_check_failure_alert_sensor.evaluate_tick(context)

    assert result.skip_message == "2 check alert(s) sent; 3 execution(s) examined."
    assert json.loads(result.cursor)["watermark"] > 0


def test_runless_check_report_links_to_the_asset(
    instance: DagsterInstance, receiver: RecordingHttpServer
) -> None:
    notifier = AlertNotifier(webhook_url=receiver.url, ui_base_url=UI)
    cursor = tick(instance, None, notifier)

    # An external system reporting a check result, with no Dagster run behind it.
    instance.report_runless_asset_event(
        AssetCheckEvaluation(
            asset_key=AssetKey(["toy", "listens"]),
            check_name="listens_not_empty",
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            metadata={"observed": 0, "expected": ">= 1"},
        )
    )
    tick(instance, cursor, notifier)

    (body,) = receiver.json_bodies()
    assert "Observed: 0" in body["text"] and "Expected: >= 1" in body["text"]
    assert f"Link: {UI}/assets/toy/listens" in body["text"]
    assert "Run:" not in body["text"]


def test_check_finishing_after_a_newer_one_is_still_alerted(
    instance: DagsterInstance, receiver: RecordingHttpServer, tmp_path: Path
) -> None:
    """Execution rows become final out of id order; the cursor must not skip the slow one."""

    @asset
    def fast() -> int:
        """Finishes at once."""
        return 0

    @asset_check(asset=fast)
    def fast_not_empty(fast: int) -> AssetCheckResult:
        """Fails (ERROR)."""
        return AssetCheckResult(passed=fast > 0, metadata={"observed": fast, "threshold": 1})

    defs = Definitions(
        assets=[slow_run.slow, fast], asset_checks=[slow_run.slow_not_empty, fast_not_empty]
    )
    notifier = AlertNotifier(webhook_url=receiver.url, ui_base_url=UI)

    def local_tick(cursor: str | None) -> str | None:
        context = build_sensor_context(
            instance=instance,
            cursor=cursor,
            definitions=defs,
            resources={"alert_notifier": notifier},
        )
        return asset_check_failure_alert_sensor.evaluate_tick(context).cursor

    cursor = local_tick(None)
    gate = tmp_path / "gate"
    # instance_for_test points $DAGSTER_HOME at this instance, which the child process inherits.
    slow = subprocess.Popen([sys.executable, "-m", slow_run.__name__, str(gate)])
    try:
        slow_key = AssetCheckKey(AssetKey("slow"), "slow_not_empty")
        deadline = time.monotonic() + 120
        while not instance.event_log_storage.get_asset_check_execution_history(slow_key, limit=1):
            assert slow.poll() is None, "the slow run ended before planning its check"
            assert time.monotonic() < deadline, "the slow run never planned its check"
            time.sleep(0.1)

        materialize([fast, fast_not_empty], instance=instance, raise_on_error=False)
        cursor = local_tick(cursor)
        assert ["fast_not_empty" in body["text"] for body in receiver.json_bodies()] == [True]
    finally:
        gate.touch()
        returncode = slow.wait(timeout=120)
    assert returncode == 0  # the check fails, but a non-blocking check does not fail the run

    cursor = local_tick(cursor)
    local_tick(cursor)
    texts = [body["text"] for body in receiver.json_bodies()]
    assert len(texts) == 2
    assert "Check slow_not_empty failed on slow" in texts[1]
