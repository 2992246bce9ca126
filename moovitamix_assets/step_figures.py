"""Figures of one asset step, for the UI's plots and, when configured, a Prometheus Pushgateway.

The equivalent of the seed pipeline's metrics: the raw assets already report request time
(``api_seconds``), errors (``retries``, ``rejected_records``) and records processed per endpoint
(``rows_valid``, ``api_total``); this helper adds what the process spent (``cpu_seconds``,
``peak_rss_mb``) and the step's wall time (``step_seconds``), then pushes every number of the
materialization to the Pushgateway named by MOOVITAMIX_PROMETHEUS_PUSHGATEWAY_URL (off when unset).

Use::

    figures = start_step_figures()
    ...  # the asset's work
    metadata = finish_step_figures(context, metadata, figures)
"""

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from moovitamix_assets.run_metrics import RunFigures, push_run_metrics, sample_run_figures


@dataclass(frozen=True)
class StepStart:
    """What the process had spent when the step started."""

    wall: float
    figures: RunFigures


def start_step_figures() -> StepStart:
    """Sample the clock, CPU time and peak memory at the start of a step."""
    return StepStart(wall=time.perf_counter(), figures=sample_run_figures())


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
    spent = sample_run_figures().since(start.figures)
    figures = {
        **metadata,
        **spent.as_metadata(),
        "step_seconds": round(time.perf_counter() - start.wall, 3),
    }
    push_run_metrics(
        context.job_name,
        figures,
        {"asset": (asset_key or context.asset_key).to_user_string()},
        gateway_url=gateway_url,
        log=context.log,
    )
    return figures
