"""AlertNotifier against a real HTTP receiver on loopback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    build_sensor_context,
    instance_for_test,
)

from moovitamix_assets.alerts import Alert, AlertNotifier
from moovitamix_assets.definitions import build_resources
from moovitamix_assets.defs.monitoring.sensors import asset_check_failure_alert_sensor
from moovitamix_assets_tests.defs.monitoring import toy_definitions as toy
from moovitamix_assets_tests.defs.monitoring.http_receiver import (
    RecordingHttpServer,
    closed_port_url,
)

ALERT = Alert(
    kind="check_failed",
    title="Check users_not_empty failed on raw/users [2026-04-09]",
    asset_key="raw/users",
    partition="2026-04-09",
    observed="0",
    expected=">= 1",
    run_id="abc-123",
    link="http://127.0.0.1:3000/runs/abc-123",
    dedupe_key="check_failed:raw/users:users_not_empty:2026-04-09:7",
    details="no rows in the snapshot",
)


@pytest.fixture
def receiver() -> Iterator[RecordingHttpServer]:
    with RecordingHttpServer() as server:
        yield server


def test_links_follow_the_ui_routes() -> None:
    notifier = AlertNotifier(ui_base_url="http://ui:3000/")
    assert notifier.run_url("r-1") == "http://ui:3000/runs/r-1"
    assert notifier.asset_url(AssetKey(["raw", "users"])) == "http://ui:3000/assets/raw/users"
    assert notifier.asset_url(AssetKey("a b")) == "http://ui:3000/assets/a%20b"


def test_the_message_carries_every_fact_in_reading_order() -> None:
    assert ALERT.text() == (
        "Check users_not_empty failed on raw/users [2026-04-09]\n"
        "Asset: raw/users\nPartition: 2026-04-09\nObserved: 0\nExpected: >= 1\nRun: abc-123\n"
        "Details: no rows in the snapshot\nLink: http://127.0.0.1:3000/runs/abc-123"
    )
    runless = Alert(kind="run_failed", title="t", link="l", dedupe_key="d", observed="FAILURE")
    assert runless.text() == "t\nObserved: FAILURE\nLink: l"


def test_send_posts_one_slack_json(receiver: RecordingHttpServer) -> None:
    notifier = AlertNotifier(webhook_url=f"{receiver.url}/services/T0/B0/secret")

    assert notifier.send(ALERT) is True

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.method == "POST"
    assert request.path == "/services/T0/B0/secret"
    assert request.headers["Content-Type"] == "application/json"
    # Slack's plain text message, under the kind's emoji.
    assert request.json() == {"text": f":red_circle: {ALERT.text()}"}


def test_erroring_webhook_is_logged_without_its_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with RecordingHttpServer(status=500) as receiver:
        webhook = f"{receiver.url}/services/T0/B0/very-secret-token"
        notifier = AlertNotifier(webhook_url=webhook, max_retries=1)
        with caplog.at_level(logging.INFO):
            assert notifier.send(ALERT) is False
        # One retry on 5xx, then give up.
        assert len(receiver.requests) == 2

    assert "HTTP 500" in caplog.text
    assert ALERT.title in caplog.text  # the alert itself is not lost
    assert "very-secret-token" not in caplog.text
    assert receiver.url not in caplog.text


def test_dead_webhook_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    notifier = AlertNotifier(webhook_url=closed_port_url(), max_retries=0, timeout_seconds=2)

    with caplog.at_level(logging.INFO):
        assert notifier.send(ALERT) is False

    assert "unreachable (ConnectionError)" in caplog.text
    assert "hooks/dead" not in caplog.text


def test_without_webhook_the_alert_goes_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("moovitamix.test.alerts")

    with caplog.at_level(logging.INFO, logger="moovitamix.test.alerts"):
        assert AlertNotifier().send(ALERT, log) is False
        freshness = Alert(**{**ALERT.__dict__, "kind": "freshness_failed"})
        AlertNotifier().send(freshness, log)

    levels = [record.levelno for record in caplog.records]
    assert levels == [logging.ERROR, logging.WARNING]
    assert ALERT.title in caplog.records[0].getMessage()
    assert "Observed: 0" in caplog.records[0].getMessage()


def test_env_wiring_reads_the_webhook_when_the_sensor_runs(
    receiver: RecordingHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOOVITAMIX_ALERT_WEBHOOK_URL", f"{receiver.url}/from-env")
    monkeypatch.setenv("MOOVITAMIX_UI_URL", "http://ui.example:3000")
    notifier = build_resources()["alert_notifier"]
    # The secret stays an EnvVar reference in the definitions, not a copied string.
    assert notifier.webhook_url == "MOOVITAMIX_ALERT_WEBHOOK_URL"

    # Resolved by Dagster when the sensor runs: a failed check reaches the receiver, with the
    # UI URL from the environment in its link.
    with instance_for_test() as instance:

        def tick(cursor: str | None) -> str | None:
            context = build_sensor_context(
                instance=instance,
                cursor=cursor,
                definitions=toy.defs,
                resources={"alert_notifier": notifier},
            )
            return asset_check_failure_alert_sensor.evaluate_tick(context).cursor

        cursor = tick(None)
        instance.report_runless_asset_event(
            AssetCheckEvaluation(
                asset_key=AssetKey(["toy", "listens"]),
                check_name="listens_not_empty",
                passed=False,
                severity=AssetCheckSeverity.ERROR,
            )
        )
        tick(cursor)
    (request,) = receiver.requests
    assert request.path == "/from-env"
    assert "http://ui.example:3000/assets/toy/listens" in request.json()["text"]


def test_env_wiring_without_variables_logs_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOOVITAMIX_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("MOOVITAMIX_UI_URL", raising=False)
    notifier = build_resources()["alert_notifier"]
    assert notifier.webhook_url is None
    assert notifier.ui_base_url == "http://127.0.0.1:3000"
