"""Run figures: CPU seconds and peak memory of the process, and an optional Pushgateway push.

Assets attach the figures as numeric materialization metadata (the UI plots them). Prometheus
exposure is off unless MOOVITAMIX_PROMETHEUS_PUSHGATEWAY_URL is set; it speaks the text exposition
format over plain `requests`, so no client library is needed.
"""

import base64
import logging
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import psutil
import requests

PUSHGATEWAY_URL_ENV: Final = "MOOVITAMIX_PROMETHEUS_PUSHGATEWAY_URL"
METRIC_PREFIX: Final = "moovitamix_"
PUSH_TIMEOUT_SECONDS: Final = 5.0

_METRIC_NAME_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_NAME_INVALID = re.compile(r"[^a-zA-Z0-9_]")

_logger = logging.getLogger(__name__)


def _peak_rss_bytes() -> int:
    try:
        import resource
    except ImportError:  # Windows: psutil reports the peak working set there.
        return int(getattr(psutil.Process().memory_info(), "peak_wset", 0))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass(frozen=True)
class RunFigures:
    """CPU time and peak resident memory of the current process."""

    cpu_seconds: float
    peak_rss_mb: float

    def since(self, start: "RunFigures") -> "RunFigures":
        """Figures of the work done since `start`.

        CPU time is a difference; the peak is the process's high-water mark (it cannot be
        attributed to an interval), which is what sizes a worker.

        Args:
            start: A sample taken before the work.

        Returns:
            The CPU seconds spent since `start` and the current peak RSS.
        """
        return RunFigures(max(self.cpu_seconds - start.cpu_seconds, 0.0), self.peak_rss_mb)

    def as_metadata(self) -> dict[str, float]:
        """Numeric metadata for a materialization: `cpu_seconds` and `peak_rss_mb`."""
        return {
            "cpu_seconds": round(self.cpu_seconds, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
        }


def sample_run_figures() -> RunFigures:
    """Sample the current process's CPU seconds (user + system) and peak RSS in MiB."""
    cpu = psutil.Process().cpu_times()
    return RunFigures(
        cpu_seconds=cpu.user + cpu.system,
        peak_rss_mb=_peak_rss_bytes() / (1024 * 1024),
    )


def numeric_metadata(metadata: Mapping[str, Any]) -> dict[str, float]:
    """Keep the finite numbers of a metadata mapping (MetadataValue objects or plain values).

    Args:
        metadata: Materialization metadata.

    Returns:
        Name to float, without booleans, strings, tables or non-finite numbers.
    """
    numbers: dict[str, float] = {}
    for key, value in metadata.items():
        raw = getattr(value, "value", value)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            continue
        if math.isfinite(raw):
            numbers[key] = float(raw)
    return numbers


def metric_name(key: str, prefix: str = METRIC_PREFIX) -> str:
    """A valid Prometheus metric name for a metadata key (`dagster/row_count` -> `*_row_count`)."""
    name = _METRIC_NAME_INVALID.sub("_", f"{prefix}{key}")
    return f"_{name}" if name[0].isdigit() else name


def format_exposition(metrics: Mapping[str, float], labels: Mapping[str, str] | None = None) -> str:
    """Render gauges in the Prometheus text exposition format (version 0.0.4).

    Args:
        metrics: Metric name (already valid) to value.
        labels: Labels added to every sample.

    Returns:
        One `# TYPE name gauge` line and one sample line per metric, newline-terminated.
    """
    label_text = ""
    if labels:
        pairs = []
        for name, value in sorted(labels.items()):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            pairs.append(f'{_LABEL_NAME_INVALID.sub("_", name)}="{escaped}"')
        label_text = "{" + ",".join(pairs) + "}"
    lines = []
    for name, value in sorted(metrics.items()):
        lines.append(f"# TYPE {name} gauge")
        lines.append(f"{name}{label_text} {value!r}")
    return "\n".join(lines) + "\n"


def _path_segment(name: str, value: str) -> str:
    # The Pushgateway's base64 form carries values a URL path cannot (slashes, empty).
    if not value or "/" in value:
        encoded = base64.urlsafe_b64encode(value.encode()).decode() or "="
        return f"{name}@base64/{encoded}"
    return f"{name}/{quote(value, safe='')}"


def pushgateway_path(job: str, grouping: Mapping[str, str] | None = None) -> str:
    """Path of a Pushgateway group: `/metrics/job/<job>/<label>/<value>...`."""
    segments = [_path_segment("job", job)]
    segments += [_path_segment(name, value) for name, value in (grouping or {}).items()]
    return "/metrics/" + "/".join(segments)


def push_run_metrics(
    job: str,
    metadata: Mapping[str, Any],
    grouping: Mapping[str, str] | None = None,
    *,
    gateway_url: str | None = None,
    timeout_seconds: float = PUSH_TIMEOUT_SECONDS,
    log: logging.Logger | None = None,
) -> bool:
    """Push a run's numeric metadata as gauges to a Prometheus Pushgateway, if one is configured.

    The group (job plus `grouping`, e.g. `{"asset": "core/users"}`) is replaced with PUT, so a
    group always holds the latest run's figures. Run ids are deliberately not a grouping label:
    the Pushgateway keeps every group forever. A failed push is logged and never raised: metrics
    must not fail a materialization.

    Args:
        job: Pushgateway `job` label (the Dagster job name).
        metadata: Materialization metadata; only finite numbers are pushed.
        grouping: Further grouping labels.
        gateway_url: Pushgateway base URL; read from MOOVITAMIX_PROMETHEUS_PUSHGATEWAY_URL when
            None. Nothing is sent when neither is set.
        timeout_seconds: Connect and read timeout.
        log: Where to report a failed push (the module logger when None).

    Returns:
        True when the Pushgateway accepted the push, False when disabled, empty or failed.
    """
    log = log or _logger
    url = gateway_url if gateway_url is not None else os.environ.get(PUSHGATEWAY_URL_ENV)
    if not url:
        return False
    metrics = {metric_name(key): value for key, value in numeric_metadata(metadata).items()}
    if not metrics:
        return False
    path = pushgateway_path(job, grouping)
    try:
        response = requests.put(
            url.rstrip("/") + path,
            data=format_exposition(metrics).encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
            timeout=timeout_seconds,
        )
        response.raise_for_status()
    except requests.RequestException as exc:
        log.warning("Pushgateway push of %s failed (%s)", path, type(exc).__name__)
        return False
    return True
