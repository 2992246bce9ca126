"""Figures of one asset step (CPU time, peak memory, wall time) for the UI's plots and, when
MOOVITAMIX_PROMETHEUS_PUSHGATEWAY_URL is set, a Prometheus Pushgateway: ``start_step_figures()``
before the asset's work, ``finish_step_figures(context, metadata, start)`` after it."""

import base64
import logging
import math
import os
import re
import resource
import sys
import time
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import dagster as dg
import requests

PUSHGATEWAY_URL_ENV: Final = "MOOVITAMIX_PROMETHEUS_PUSHGATEWAY_URL"

_logger = logging.getLogger(__name__)


class StepStart(NamedTuple):  # the clock and the process's CPU time when the step started
    wall: float
    cpu: float


def start_step_figures() -> StepStart:
    return StepStart(time.perf_counter(), time.process_time())


def finish_step_figures(
    context: dg.AssetExecutionContext,
    metadata: Mapping[str, Any],
    start: StepStart,
    *,
    asset_key: dg.AssetKey | None = None,
) -> dict[str, Any]:
    """The metadata plus ``cpu_s``, ``peak_rss_mb`` (the high-water mark, what sizes a worker) and
    ``step_s``, pushed when a Pushgateway is set; ``asset_key`` names the asset of a multi-asset."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, else KiB
    figures = {
        **metadata,
        "cpu_s": round(max(time.process_time() - start.cpu, 0.0), 3),
        "peak_rss_mb": round(peak / 2**20 if sys.platform == "darwin" else peak / 1024, 1),
        "step_s": round(time.perf_counter() - start.wall, 3),
    }
    asset = (asset_key or context.asset_key).to_user_string()
    push_run_metrics(context.job_name, asset, figures, context.log)
    return figures


def push_run_metrics(job: str, asset: str, metadata: Mapping[str, Any], log: Any = _logger) -> bool:
    """PUT the finite numbers of ``metadata`` as gauges to the Pushgateway; True when accepted.
    PUT replaces the group (job + asset): no run id label, the gateway keeps groups forever.
    A failed push is logged, never raised: metrics must not fail a materialization."""
    url = os.environ.get(PUSHGATEWAY_URL_ENV)
    gauges = {}
    for key, value in metadata.items():
        value = getattr(value, "value", value)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            gauges[re.sub(r"[^a-zA-Z0-9_:]", "_", f"moovitamix_{key}")] = float(value)
    if not url or not gauges:
        return False
    # The label value goes base64-encoded: asset keys hold slashes a URL path segment cannot.
    path = f"/metrics/job/{job}/asset@base64/{base64.urlsafe_b64encode(asset.encode()).decode()}"
    body = "".join(f"# TYPE {name} gauge\n{name} {gauges[name]!r}\n" for name in sorted(gauges))
    try:
        requests.put(
            url.rstrip("/") + path,
            data=body.encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
            timeout=5.0,
        ).raise_for_status()
    except requests.RequestException as exc:
        log.warning("Pushgateway push of %s failed (%s)", path, type(exc).__name__)
        return False
    return True
