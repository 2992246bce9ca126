"""Alert delivery: one Slack-compatible webhook message per alert, or the log when none is set.

The webhook URL *is* the credential, so it never appears in a log line, an exception message or a
tick: failures name the HTTP status or the exception class only.
"""

import logging
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import quote

import requests
from dagster import AssetKey, ConfigurableResource
from pydantic import Field
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

DEFAULT_UI_URL: Final = "http://127.0.0.1:3000"

_EMOJI = {"check_failed": ":red_circle:", "run_failed": ":x:", "freshness_failed": ":hourglass:"}
# News rather than failures: logged as warnings when no webhook is set.
_WARNING_KINDS: Final = frozenset({"freshness_failed", "model_refused"})

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Alert:
    """One alert: everything an on-call engineer needs in one message."""

    kind: Literal["check_failed", "run_failed", "freshness_failed", "model_refused"]
    title: str
    link: str
    dedupe_key: str
    asset_key: str | None = None
    partition: str | None = None
    observed: str | None = None
    expected: str | None = None
    run_id: str | None = None
    details: str | None = None

    def text(self) -> str:
        """The message: its title, then the labelled facts that are known, then the link."""
        labels = ("Asset", "Partition", "Observed", "Expected", "Run", "Details")
        values = (self.asset_key, self.partition, self.observed, self.expected, self.run_id)
        facts = [f"{k}: {v}" for k, v in zip(labels, (*values, self.details), strict=True) if v]
        return "\n".join([self.title, *facts, f"Link: {self.link}"])


def error_headline(error: Any) -> str:
    """The first line of the first error in the chain (a SerializableErrorInfo) that is not one
    of Dagster's wrappers: what went wrong, for a console line or an alert."""
    cause = error
    while cause is not None and cause.cls_name.startswith("Dagster"):
        cause = cause.cause or cause.context
    return (cause or error).message.strip().split("\n")[0].strip()


class AlertNotifier(ConfigurableResource):
    """Delivers alerts to a Slack-compatible incoming webhook, or to the log when none is set."""

    webhook_url: str | None = Field(
        default=None, description="Slack-compatible webhook, a secret; unset: the sensor log."
    )
    ui_base_url: str = Field(
        default=DEFAULT_UI_URL, description="Base URL of the Dagster UI for alert links."
    )
    timeout_seconds: float = Field(default=10.0, description="Timeout of one webhook call, in s.")
    max_retries: int = Field(default=2, description="Retries on connection errors, 429 and 5xx.")

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_base_url.rstrip('/')}/runs/{quote(run_id, safe='')}"

    def asset_url(self, asset_key: AssetKey) -> str:
        path = "/".join(quote(part, safe="") for part in asset_key.path)
        return f"{self.ui_base_url.rstrip('/')}/assets/{path}"

    def send(self, alert: Alert, log: logging.Logger | None = None) -> bool:
        """Post one alert (True when accepted), else log it. Never raises: a failed delivery is
        logged with the alert and counts as handled (better than a storm against a broken hook)."""
        log = log or _logger
        if not self.webhook_url:
            level = logging.WARNING if alert.kind in _WARNING_KINDS else logging.ERROR
            log.log(level, "ALERT (no webhook configured)\n%s", alert.text())
            return False
        # Only failures where the webhook certainly did not post are retried (connect errors,
        # 429, 5xx): retrying a read timeout could post the same alert twice.
        retry = Retry(
            total=self.max_retries,
            read=0,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods={"POST"},
            backoff_factor=0.5,
            raise_on_status=False,
        )
        try:
            with requests.Session() as session:
                session.mount("http://", adapter := HTTPAdapter(max_retries=retry))
                session.mount("https://", adapter)
                # Slack's plain `text` (what notifications show too), under its emoji.
                message = {"text": f"{_EMOJI.get(alert.kind, ':warning:')} {alert.text()}"}
                response = session.post(
                    self.webhook_url, json=message, timeout=self.timeout_seconds
                )
                response.raise_for_status()
        except requests.RequestException as exc:
            # The exception's own text names the URL, the secret: never log it.
            status = getattr(exc.response, "status_code", None)
            problem = f"answered HTTP {status}" if status else f"unreachable ({type(exc).__name__})"
            log.error("Alert webhook %s for %s:\n%s", problem, alert.dedupe_key, alert.text())
            return False
        log.info("Alert %s delivered to the webhook", alert.dedupe_key)
        return True
