"""Raw layer: one daily snapshot of each MooVitamix API endpoint, stored as the API served it."""

import time
from collections.abc import Iterator
from datetime import date
from typing import Any, Final

import dagster as dg
import pandas as pd

from moovitamix_assets.constants import ENDPOINTS, INGESTION_GROUP, RAW_SCHEMA, SNAPSHOT_DATE_COLUMN
from moovitamix_assets.contract import Reject, ValidatedPage, fields_of, validate_page
from moovitamix_assets.defs.ingestion.api import MoovitamixApiResource
from moovitamix_assets.defs.ingestion.tables import (
    MANIFEST_TABLE,
    RAW_COLUMNS,
    RAW_KEYS,
    REJECTS_TABLE,
    ensure_bookkeeping_tables,
)
from moovitamix_assets.freshness import DAILY_FRESHNESS
from moovitamix_assets.partitions import daily_partitions, snapshot_date_for
from moovitamix_assets.step_figures import finish_step_figures, start_step_figures
from moovitamix_assets.warehouse import columns
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets.warehouse.io_manager import FrameStream, Sidecar

# Valid records per chunk handed to the IO manager: memory holds a chunk, not an endpoint.
CHUNK_RECORDS: Final = 5_000


def raw_spec(endpoint: str) -> dg.AssetSpec:
    """The raw snapshot asset of one API endpoint, described by its table in columns.yaml."""
    table = columns.for_asset(RAW_KEYS[endpoint])
    return dg.AssetSpec(
        key=RAW_KEYS[endpoint],
        description=table.description,
        group_name=INGESTION_GROUP,
        kinds={"api", "postgres"},
        metadata={"partition_expr": SNAPSHOT_DATE_COLUMN, **table.definition_metadata()},
        freshness_policy=DAILY_FRESHNESS,
    ).with_io_manager_key("warehouse_io_manager")


def snapshot_stream(
    context: dg.AssetExecutionContext,
    api: MoovitamixApiResource,
    endpoint: str,
    snapshot: date,
) -> FrameStream:
    """One endpoint's raw partition as a stream: its chunks, then its manifest row and rejects."""
    read, start, fields = ValidatedPage(), start_step_figures(), fields_of(endpoint)
    figures = {"rows_valid": 0, "requests": 0, "retries": 0, "api_mb": 0.0}  # and total, pages

    def frame() -> pd.DataFrame:
        # The records as sent, a chunk at a time: PostgreSQL parses the timestamps' text in COPY.
        chunk = pd.DataFrame(read.records, columns=fields, dtype=object)
        chunk.insert(0, SNAPSHOT_DATE_COLUMN, snapshot)
        figures["rows_valid"], read.records = figures["rows_valid"] + len(chunk), []
        return chunk

    def chunks() -> Iterator[pd.DataFrame]:
        for page in api.read_pages(endpoint, context.log):
            figures.update(api_total=page.total, pages=page.pages, requests=figures["requests"] + 1)
            figures["retries"] += page.retries
            figures["api_mb"] += page.bytes / 2**20
            validate_page(endpoint, page.number, page.items, into=read)
            if len(read.records) >= CHUNK_RECORDS:
                yield frame()
        if read.records:
            yield frame()

    def finish() -> tuple[list[Sidecar], dict[str, Any]]:
        if read.rejects:
            first = read.rejects[0]
            context.log.warning(
                f"/{endpoint}: {len(read.rejects)} record(s) failed validation and were kept in "
                f"{RAW_SCHEMA}.{REJECTS_TABLE} for {snapshot}; first: page {first.page}, record "
                f"{first.position}, field {first.field}: {first.reason}"
            )
        extra, missing = sorted(read.extra_fields), sorted(read.missing_fields)
        if extra or missing:
            context.log.warning(
                f"/{endpoint} schema drift: fields outside the contract {extra}, contract fields "
                f"missing {missing}"
            )
        # The manifest's drift is the stored rows' (none misses a field: missing_fields keeps its
        # default {}): a record rejected for a missing field is judged by the reject-rate audit.
        manifest = {
            "endpoint": endpoint,
            SNAPSHOT_DATE_COLUMN: snapshot,
            **{k: figures[k] for k in ("api_total", "pages", "rows_valid")},
            "rows_rejected": len(read.rejects),
            "extra_fields": sorted(read.loaded_extra_fields),
            "run_id": context.run.run_id,
        }
        rejects = pd.DataFrame(read.rejects, columns=Reject._fields, dtype=object)
        rejects.insert(1, SNAPSHOT_DATE_COLUMN, snapshot)
        match = {"endpoint": endpoint}
        sidecars = [
            Sidecar(RAW_SCHEMA, MANIFEST_TABLE, pd.DataFrame([manifest]), match),
            Sidecar(RAW_SCHEMA, REJECTS_TABLE, rejects, match),
        ]
        figures.update(  # the read's figures, for the UI's plots
            rejected_records=len(read.rejects),
            api_s=round(time.perf_counter() - start.wall, 3),
            api_mb=round(figures["api_mb"], 3),
            extra_fields=", ".join(extra) or "none",
            missing_fields=", ".join(missing) or "none",
        )
        return sidecars, finish_step_figures(context, figures, start, asset_key=RAW_KEYS[endpoint])

    return FrameStream(RAW_COLUMNS[endpoint], chunks(), finish)


@dg.multi_asset(
    name="raw_snapshots",
    specs=[raw_spec(e) for e in ENDPOINTS],
    partitions_def=daily_partitions,
    can_subset=True,
)
def raw_snapshots(
    context: dg.AssetExecutionContext,
    moovitamix_api: MoovitamixApiResource,
    postgres: PostgresResource,
) -> Iterator[dg.Output[FrameStream]]:
    """Daily snapshots of the MooVitamix API's endpoints, each stored while it is read."""
    # One step for the API source, endpoints read one after the other: each output is a stream
    # the IO manager COPYs chunk by chunk in one transaction with its manifest row and rejects,
    # so a failed read leaves that endpoint's stored day as it was. An endpoint that fails stops
    # the step there, naming the endpoint and page; the endpoints stored before it keep today's.
    snapshot = snapshot_date_for(context.partition_key)
    ensure_bookkeeping_tables(postgres.engine())
    for endpoint in ENDPOINTS:
        key = RAW_KEYS[endpoint]
        if key in context.selected_asset_keys:
            stream = snapshot_stream(context, moovitamix_api, endpoint, snapshot)
            yield dg.Output(stream, output_name=key.to_python_identifier())


raw_assets = [raw_snapshots]
