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

from moovitamix_assets.alerts import (
    ALERT_WEBHOOK_URL_ENV,
    UI_URL_ENV,
    Alert,
    AlertNotifier,
    alert_notifier_from_env,
    format_slack_message,
)
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


def test_slack_message_carries_every_fact() -> None:
    message = format_slack_message(ALERT)

    text = message["text"]
    for fact in ("users_not_empty", "raw/users", "2026-04-09", "Observed: 0", "Expected: >= 1"):
        assert fact in text
    assert "http://127.0.0.1:3000/runs/abc-123" in text
    kinds = [block["type"] for block in message["blocks"]]
    assert kinds == ["header", "section", "section", "context"]
    field_texts = [f["text"] for f in message["blocks"][1]["fields"]]
    assert "*Observed*\n0" in field_texts and "*Expected*\n>= 1" in field_texts
    assert len(message["blocks"][0]["text"]["text"]) <= 150


def test_long_titles_are_cut_to_slack_limits() -> None:
    alert = Alert(**{**ALERT.__dict__, "title": "x" * 400, "details": "y" * 5000})
    message = format_slack_message(alert)
    assert len(message["blocks"][0]["text"]["text"]) == 150
    assert len(message["blocks"][2]["text"]["text"]) == 3000


def test_send_posts_one_slack_json(receiver: RecordingHttpServer) -> None:
    notifier = AlertNotifier(webhook_url=f"{receiver.url}/services/T0/B0/secret")

    assert notifier.send(ALERT) is True

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.method == "POST"
    assert request.path == "/services/T0/B0/secret"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == format_slack_message(ALERT)


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
    monkeypatch.setenv(ALERT_WEBHOOK_URL_ENV, f"{receiver.url}/from-env")
    monkeypatch.setenv(UI_URL_ENV, "http://ui.example:3000")
    notifier = alert_notifier_from_env()
    # The secret stays an EnvVar reference in the definitions, not a copied string.
    assert notifier.webhook_url == ALERT_WEBHOOK_URL_ENV

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
    monkeypatch.delenv(ALERT_WEBHOOK_URL_ENV, raising=False)
    monkeypatch.delenv(UI_URL_ENV, raising=False)
    notifier = alert_notifier_from_env()
    assert notifier.webhook_url is None
    assert notifier.ui_base_url == "http://127.0.0.1:3000"
