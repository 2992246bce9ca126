"""Run the raw + core graph with its checks in process, against a given API URL and database."""

from __future__ import annotations

from datetime import date

import dagster as dg

from moovitamix_assets.defs.core.assets import core_assets
from moovitamix_assets.defs.core.checks import core_checks
from moovitamix_assets.defs.ingestion.api import MoovitamixApiResource
from moovitamix_assets.defs.ingestion.assets import raw_assets
from moovitamix_assets.defs.ingestion.checks import raw_checks
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets.warehouse.io_manager import PostgresPandasIOManager

GRAPH = [*raw_assets, *core_assets, *raw_checks, *core_checks]


def run_day(
    api_url: str,
    postgres: PostgresResource,
    day: date,
    selection: dg.AssetSelection | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize the graph (or a selection of it) for one day; failures do not raise."""
    return dg.materialize(
        GRAPH,
        selection=selection,
        instance=instance,
        partition_key=day.isoformat(),
        resources={
            "moovitamix_api": MoovitamixApiResource(base_url=api_url, backoff_jitter=0.0),
            "postgres": postgres,
            "warehouse_io_manager": PostgresPandasIOManager(database=postgres),
        },
        raise_on_error=False,
    )


def evaluations(
    result: dg.ExecuteInProcessResult,
) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """Check evaluations of a run by (asset, check name)."""
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    """Assets the run materialized."""
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def metadata(evaluation: dg.AssetCheckEvaluation) -> dict[str, object]:
    """Plain values of a check evaluation's metadata."""
    return {key: value.value for key, value in evaluation.metadata.items()}
