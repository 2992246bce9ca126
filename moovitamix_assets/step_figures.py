"""Figures of one asset step, for the UI's plots and, when configured, a Prometheus Pushgateway.

The raw assets already report request time, errors and records per endpoint; this adds what the
process spent (``cpu_seconds``, ``peak_rss_mb``) and the step's wall time (``step_seconds``), then
pushes every number of the materialization to the Pushgateway named by
MOOVITAMIX_PROMETHEUS_PUSHGATEWAY_URL (off when unset). Use::

    start = start_step_figures()
    ...  # the asset's work
    metadata = finish_step_figures(context, metadata, start)
"""

import base64
import logging
import math
import os
import re
import resource
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import dagster as dg
import requests

PUSHGATEWAY_URL_ENV: Final = "MOOVITAMIX_PROMETHEUS_PUSHGATEWAY_URL"
PUSH_TIMEOUT_SECONDS: Final = 5.0

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepStart:
    """The clock and the process's CPU time when the step started."""

    wall: float
    cpu: float


def start_step_figures() -> StepStart:
    """Sample the clock and the CPU time at the start of a step."""
    return StepStart(wall=time.perf_counter(), cpu=time.process_time())


def peak_rss_mb() -> float:
    """The process's peak resident memory in MiB.

    A high-water mark, not attributable to one step: it is what sizes a worker.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in bytes on macOS and in KiB on Linux.
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def finish_step_figures(
    context: dg.AssetExecutionContext,
    metadata: Mapping[str, Any],
    start: StepStart,
    *,
    gateway_url: str | None = None,
    asset_key: dg.AssetKey | None = None,
) -> dict[str, Any]:
    """Add the step's figures to its metadata and push the numbers when a Pushgateway is set.

    Args:
        context: The asset's execution context (job name and asset key label the push).
        metadata: The materialization's metadata so far.
        start: What ``start_step_figures`` sampled before the work.
        gateway_url: Pushgateway base URL; MOOVITAMIX_PROMETHEUS_PUSHGATEWAY_URL when None.
        asset_key: The asset the figures belong to; required in a multi-asset step.

    Returns:
        A new mapping: the metadata plus ``cpu_seconds``, ``peak_rss_mb`` and ``step_seconds``.
        A failed push is logged and never raised (see ``push_run_metrics``).
    """
    figures = {
        **metadata,
        "cpu_seconds": round(max(time.process_time() - start.cpu, 0.0), 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "step_seconds": round(time.perf_counter() - start.wall, 3),
    }
    asset = (asset_key or context.asset_key).to_user_string()
    push_run_metrics(
        context.job_name, figures, {"asset": asset}, gateway_url=gateway_url, log=context.log
    )
    return figures


def push_run_metrics(
    job: str,
    metadata: Mapping[str, Any],
    grouping: Mapping[str, str] | None = None,
    *,
    gateway_url: str | None = None,
    log: logging.Logger | None = None,
) -> bool:
    """Push the finite numbers of some metadata as gauges to a Prometheus Pushgateway, if set.

    The group (job plus `grouping`) is replaced with PUT, so it always holds the latest run's
    figures; run ids are not a grouping label because the Pushgateway keeps every group forever.
    A failed push is logged, never raised: metrics must not fail a materialization.

    Args:
        job: Pushgateway `job` label (the Dagster job name).
        metadata: Materialization metadata (MetadataValue objects or plain values).
        grouping: Further grouping labels, e.g. `{"asset": "core/users"}`.
        gateway_url: Pushgateway base URL; MOOVITAMIX_PROMETHEUS_PUSHGATEWAY_URL when None.
        log: Where to report a failed push (the module logger when None).

    Returns:
        True when the Pushgateway accepted the push, False when disabled, empty or failed.
    """
    url = gateway_url or os.environ.get(PUSHGATEWAY_URL_ENV)
    gauges = {}
    for key, value in metadata.items():
        value = getattr(value, "value", value)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            gauges[re.sub(r"[^a-zA-Z0-9_:]", "_", f"moovitamix_{key}")] = float(value)
    if not url or not gauges:
        return False
    # Label values go base64-encoded: asset keys hold slashes a URL path segment cannot.
    path = f"/metrics/job/{job}" + "".join(
        f"/{name}@base64/{base64.urlsafe_b64encode(value.encode()).decode()}"
        for name, value in (grouping or {}).items()
    )
    body = "".join(f"# TYPE {name} gauge\n{name} {gauges[name]!r}\n" for name in sorted(gauges))
    try:
        response = requests.put(
            url.rstrip("/") + path,
            data=body.encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
            timeout=PUSH_TIMEOUT_SECONDS,
        )
        response.raise_for_status()
    except requests.RequestException as exc:
        (log or _logger).warning("Pushgateway push of %s failed (%s)", path, type(exc).__name__)
        return False
    return True
