"""Freshness alerts: the real freshness daemon code evaluates a real policy, the sensor alerts.

Driving freshness without a running `dagster-daemon` needs Dagster internals (there is no public
API for it): the daemon's own `FreshnessDaemon.run_iteration` on an in-process workspace, and
Dagster's `freeze_time` test helper to make a materialization old enough to breach the window
(the policy refuses windows under one minute, and a test must not sleep for one).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from dagster import AssetKey, DagsterInstance, build_sensor_context, materialize
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.freshness import FreshnessDaemon

from moovitamix_assets.alerts import AlertNotifier
from moovitamix_assets.defs.monitoring.sensors import freshness_failure_alert_sensor
from moovitamix_assets_tests.defs.monitoring import toy_definitions as toy
from moovitamix_assets_tests.defs.monitoring.http_receiver import RecordingHttpServer

UI = "http://dagster.test:3000"
SUMMARY = AssetKey(["toy", "daily_summary"])


@pytest.fixture
def receiver() -> Iterator[RecordingHttpServer]:
    with RecordingHttpServer() as server:
        yield server


@contextmanager
def toy_workspace(instance: DagsterInstance) -> Iterator[WorkspaceProcessContext]:
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name=toy.__name__, attribute="defs"),
        location_name="toy",
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
        yield context


def evaluate_freshness(workspace: WorkspaceProcessContext) -> None:
    """One iteration of the OSS freshness daemon (what `dagster-daemon` runs every 30 s)."""
    list(FreshnessDaemon().run_iteration(workspace))


def tick(instance: DagsterInstance, cursor: str | None, notifier: AlertNotifier) -> str | None:
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=toy.defs,
        resources={"alert_notifier": notifier},
    )
    return freshness_failure_alert_sensor.evaluate_tick(context).cursor


def state(instance: DagsterInstance) -> str:
    return instance.get_freshness_state_records([SUMMARY])[SUMMARY].freshness_state.value


def test_asset_past_its_window_is_alerted_once_per_transition(
    instance: DagsterInstance, receiver: RecordingHttpServer
) -> None:
    notifier = AlertNotifier(webhook_url=receiver.url, ui_base_url=UI)
    cursor = tick(instance, None, notifier)
    now = datetime.now(timezone.utc)

    with toy_workspace(instance) as workspace:
        # Materialized 5 minutes ago against a 1-minute window.
        with freeze_time(now - timedelta(minutes=5)):
            materialize([toy.daily_summary], instance=instance)
        evaluate_freshness(workspace)
        assert state(instance) == "FAIL"

        cursor = tick(instance, cursor, notifier)
        (body,) = receiver.json_bodies()
        text = body["text"]
        assert "toy/daily_summary is stale (freshness FAIL)" in text
        assert "Observed: last materialized 5m" in text
        assert "Expected: materialized within 1m 0s" in text
        assert f"Link: {UI}/assets/toy/daily_summary" in text

        # Still failing: the daemon records no new transition, the sensor sends nothing.
        evaluate_freshness(workspace)
        cursor = tick(instance, cursor, notifier)
        cursor = tick(instance, cursor, notifier)
        assert len(receiver.requests) == 1

        # Fresh again (PASS): nothing to say.
        materialize([toy.daily_summary], instance=instance)
        evaluate_freshness(workspace)
        assert state(instance) == "PASS"
        cursor = tick(instance, cursor, notifier)
        assert len(receiver.requests) == 1

        # Two minutes later it is late again: a new transition, a new alert.
        with freeze_time(datetime.now(timezone.utc) + timedelta(minutes=2)):
            evaluate_freshness(workspace)
        assert state(instance) == "FAIL"
        tick(instance, cursor, notifier)
        assert len(receiver.requests) == 2
        assert "is stale" in receiver.json_bodies()[1]["text"]


def test_assets_without_a_policy_never_alert(
    instance: DagsterInstance, receiver: RecordingHttpServer
) -> None:
    notifier = AlertNotifier(webhook_url=receiver.url, ui_base_url=UI)
    cursor = tick(instance, None, notifier)
    with toy_workspace(instance) as workspace:
        materialize([toy.healthy], instance=instance)
        evaluate_freshness(workspace)
    tick(instance, cursor, notifier)
    assert receiver.requests == []
