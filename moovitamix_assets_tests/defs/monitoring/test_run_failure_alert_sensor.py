"""Run-failure alerts: real failed runs on a real instance, delivered to a real HTTP receiver."""

from collections.abc import Iterator

import pytest
from dagster import DagsterInstance, build_sensor_context, materialize

from moovitamix_assets.alerts import AlertNotifier
from moovitamix_assets.defs.monitoring.sensors import run_error_summary, run_failure_alert_sensor
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
    # No `definitions`: runs from `materialize()` have no code-location origin, and a sensor
    # context without one is how Dagster matches them (as in its own run-status sensor tests).
    context = build_sensor_context(
        instance=instance, cursor=cursor, resources={"alert_notifier": notifier}
    )
    return run_failure_alert_sensor.evaluate_tick(context).cursor


def test_error_summary_prefers_step_errors() -> None:
    assert run_error_summary([], "Run crashed") == "Run crashed"
    assert run_error_summary([], None) == "run failed"


def test_one_message_per_failed_run(
    instance: DagsterInstance, receiver: RecordingHttpServer
) -> None:
    notifier = AlertNotifier(webhook_url=f"{receiver.url}/hook", ui_base_url=UI)
    cursor = tick(instance, None, notifier)

    materialize([toy.healthy], instance=instance)  # a success sends nothing
    failed = materialize(
        [toy.broken], instance=instance, partition_key="2026-04-09", raise_on_error=False
    )
    assert not failed.success
    cursor = tick(instance, cursor, notifier)

    (body,) = receiver.json_bodies()
    text = body["text"]
    assert "Run of __ephemeral_asset_job__ [2026-04-09] failed" in text
    assert f"Run: {failed.run_id}" in text
    assert "Partition: 2026-04-09" in text
    assert "Asset: toy/broken" in text
    assert "ValueError: upstream file missing for 2026-04-09" in text
    assert f"Link: {UI}/runs/{failed.run_id}" in text

    for _ in range(2):
        cursor = tick(instance, cursor, notifier)
    assert len(receiver.requests) == 1

    second = materialize(
        [toy.broken], instance=instance, partition_key="2026-04-08", raise_on_error=False
    )
    tick(instance, cursor, notifier)
    assert len(receiver.requests) == 2
    assert second.run_id in receiver.json_bodies()[1]["text"]


def test_dead_receiver_does_not_raise_and_is_not_resent(
    instance: DagsterInstance, receiver: RecordingHttpServer
) -> None:
    dead = AlertNotifier(webhook_url=closed_port_url(), ui_base_url=UI, max_retries=0)
    cursor = tick(instance, None, dead)
    materialize([toy.broken], instance=instance, partition_key="2026-04-09", raise_on_error=False)

    cursor = tick(instance, cursor, dead)

    tick(instance, cursor, AlertNotifier(webhook_url=receiver.url, ui_base_url=UI))
    assert receiver.requests == []
