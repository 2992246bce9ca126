"""Alert delivery: one Slack-compatible webhook message per alert, or the log when none is set.

The webhook URL of a Slack incoming webhook *is* the credential (whoever knows it can post), so
it never appears in a log line, an exception message or a tick: failures are reported with the
exception class or the HTTP status only.
"""

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import quote

import requests
from dagster import AssetKey, ConfigurableResource, EnvVar
from pydantic import Field
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

AlertKind = Literal["check_failed", "run_failed", "freshness_failed", "model_refused"]

ALERT_WEBHOOK_URL_ENV: Final = "MOOVITAMIX_ALERT_WEBHOOK_URL"
UI_URL_ENV: Final = "MOOVITAMIX_UI_URL"

DEFAULT_UI_BASE_URL: Final = "http://127.0.0.1:3000"
DEFAULT_TIMEOUT_SECONDS: Final = 10.0

# Slack rejects a header longer than 150 characters and a section text longer than 3,000.
_SLACK_HEADER_MAX: Final = 150
_SLACK_SECTION_MAX: Final = 3000

_EMOJI_BY_KIND: Final[Mapping[str, str]] = {
    "check_failed": ":red_circle:",
    "run_failed": ":x:",
    "freshness_failed": ":hourglass:",
    "model_refused": ":warning:",
}
# News rather than failures: logged as warnings when no webhook is set.
_WARNING_KINDS: Final = frozenset({"freshness_failed", "model_refused"})

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """One alert, ready to be delivered: everything an on-call engineer needs in one message."""

    kind: AlertKind
    title: str
    asset_key: str | None
    partition: str | None
    observed: str | None
    expected: str | None
    run_id: str | None
    link: str
    dedupe_key: str
    details: str | None = None


def run_url(ui_base_url: str, run_id: str) -> str:
    """Link to a run's page in the Dagster UI."""
    return f"{ui_base_url.rstrip('/')}/runs/{quote(run_id, safe='')}"


def asset_url(ui_base_url: str, asset_key: AssetKey) -> str:
    """Link to an asset's page in the Dagster UI (one path segment per key component)."""
    path = "/".join(quote(part, safe="") for part in asset_key.path)
    return f"{ui_base_url.rstrip('/')}/assets/{path}"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fields(alert: Alert) -> list[tuple[str, str]]:
    candidates = [
        ("Asset", alert.asset_key),
        ("Partition", alert.partition),
        ("Observed", alert.observed),
        ("Expected", alert.expected),
        ("Run", alert.run_id),
    ]
    return [(label, value) for label, value in candidates if value]


def format_alert_text(alert: Alert) -> str:
    """Plain-text rendering of an alert (the Slack fallback text and the log line)."""
    lines = [alert.title]
    lines += [f"{label}: {value}" for label, value in _fields(alert)]
    if alert.details:
        lines.append(f"Details: {alert.details}")
    lines.append(f"Link: {alert.link}")
    return "\n".join(lines)


def format_slack_message(alert: Alert) -> dict[str, Any]:
    """Build the Slack-compatible JSON body for an alert.

    Args:
        alert: The alert to render.

    Returns:
        A dict with a plain `text` (what notifications and non-Slack receivers show) and simple
        `blocks`: a header, the facts as fields, the details, and the link with the dedupe key.
    """
    emoji = _EMOJI_BY_KIND.get(alert.kind, ":warning:")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _truncate(f"{emoji} {alert.title}", _SLACK_HEADER_MAX),
                "emoji": True,
            },
        }
    ]
    fields = _fields(alert)
    if fields:
        blocks.append(
            {
                "type": "section",
                # Slack caps a section at 10 fields; an alert has at most 5.
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": _truncate(f"*{label}*\n{value}", _SLACK_SECTION_MAX // 10),
                    }
                    for label, value in fields
                ],
            }
        )
    if alert.details:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _truncate(f"```{alert.details}```", _SLACK_SECTION_MAX),
                },
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"<{alert.link}|Open in Dagster>"},
                {"type": "mrkdwn", "text": f"`{alert.kind}` · dedupe `{alert.dedupe_key}`"},
            ],
        }
    )
    return {"text": format_alert_text(alert), "blocks": blocks}


class AlertNotifier(ConfigurableResource):
    """Delivers alerts to a Slack-compatible incoming webhook, or to the log when none is set."""

    webhook_url: str | None = Field(
        default=None,
        description=(
            "Slack-compatible incoming webhook (MOOVITAMIX_ALERT_WEBHOOK_URL). A secret: never "
            "logged. Unset: alerts go to the sensor log only."
        ),
    )
    ui_base_url: str = Field(
        default=DEFAULT_UI_BASE_URL,
        description="Base URL of the Dagster UI used in alert links (MOOVITAMIX_UI_URL).",
    )
    timeout_seconds: float = Field(
        default=DEFAULT_TIMEOUT_SECONDS,
        description="Connect and read timeout of one webhook call, in seconds.",
    )
    max_retries: int = Field(
        default=2,
        description="Retries on connection errors, 429 and 5xx answers (Retry-After honoured).",
    )

    def run_url(self, run_id: str) -> str:
        """Link to a run in the Dagster UI.

        Args:
            run_id: The run id.

        Returns:
            `{ui_base_url}/runs/{run_id}`.
        """
        return run_url(self.ui_base_url, run_id)

    def asset_url(self, asset_key: AssetKey) -> str:
        """Link to an asset in the Dagster UI.

        Args:
            asset_key: The asset key.

        Returns:
            `{ui_base_url}/assets/<key path>`.
        """
        return asset_url(self.ui_base_url, asset_key)

    def _session(self) -> requests.Session:
        # Only failures where Slack certainly did not post are retried (connect errors, 429,
        # 5xx): retrying a read timeout could post the same alert twice.
        retry = Retry(
            total=self.max_retries,
            connect=self.max_retries,
            read=0,
            status=self.max_retries,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=frozenset({"POST"}),
            backoff_factor=0.5,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        session = requests.Session()
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        return session

    def send(self, alert: Alert, log: logging.Logger | None = None) -> bool:
        """Deliver one alert; never raises on a delivery problem.

        Without a webhook the alert is written to `log` (ERROR for failed checks and runs,
        WARNING for freshness and refused models). A webhook that is down or answers an error is
        logged, without its URL, and the alert is considered handled: the caller must not resend
        it on the next tick.

        Args:
            alert: The alert to deliver.
            log: Where to write (the sensor's `context.log`); the module logger when None.

        Returns:
            True when the webhook accepted the message, False when it was only logged or the
            delivery failed.
        """
        log = log or _logger
        level = logging.WARNING if alert.kind in _WARNING_KINDS else logging.ERROR
        if not self.webhook_url:
            log.log(level, "ALERT (no webhook configured)\n%s", format_alert_text(alert))
            return False

        try:
            with self._session() as session:
                response = session.post(
                    self.webhook_url,
                    json=format_slack_message(alert),
                    timeout=self.timeout_seconds,
                )
                response.raise_for_status()
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "unknown"
            log.error(
                "Alert webhook answered HTTP %s for %s; alert follows\n%s",
                status,
                alert.dedupe_key,
                format_alert_text(alert),
            )
            return False
        except requests.RequestException as exc:
            # The exception text names the URL (the secret): only its class is logged.
            log.error(
                "Alert webhook unreachable (%s) for %s; alert follows\n%s",
                type(exc).__name__,
                alert.dedupe_key,
                format_alert_text(alert),
            )
            return False
        log.info("Alert %s delivered to the webhook", alert.dedupe_key)
        return True


def alert_notifier_from_env() -> AlertNotifier:
    """The `alert_notifier` resource wired to MOOVITAMIX_ALERT_WEBHOOK_URL and MOOVITAMIX_UI_URL.

    Each variable is wired as a `dagster.EnvVar` (resolved by Dagster when the sensor runs, never
    shown in the UI) only when it is set: an EnvVar naming an unset variable fails every tick,
    whereas an unset webhook must mean "alerts go to the log".

    Returns:
        An AlertNotifier for definitions.py.
    """
    webhook = EnvVar(ALERT_WEBHOOK_URL_ENV) if os.environ.get(ALERT_WEBHOOK_URL_ENV) else None
    if os.environ.get(UI_URL_ENV):
        return AlertNotifier(webhook_url=webhook, ui_base_url=EnvVar(UI_URL_ENV))
    return AlertNotifier(webhook_url=webhook)
