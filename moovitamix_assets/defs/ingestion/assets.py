"""Raw layer: one daily snapshot of each MooVitamix API endpoint, stored as the API served it."""

import time
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass
class EndpointRead(ValidatedPage):
    """One read of an endpoint: its pages validated into one ValidatedPage, and their figures."""

    total: int = 0
    pages: int = 0
    requests: int = 0
    retries: int = 0
    bytes: int = 0
    rows: int = 0


def snapshot_stream(
    context: dg.AssetExecutionContext,
    api: MoovitamixApiResource,
    endpoint: str,
    snapshot: date,
) -> FrameStream:
    """One endpoint's raw partition as a stream: its chunks, then its manifest row and rejects."""
    read, start, fields = EndpointRead(), start_step_figures(), fields_of(endpoint)

    def frame() -> pd.DataFrame:
        # The records as sent, a chunk at a time: PostgreSQL parses the timestamps' text in COPY.
        chunk = pd.DataFrame(read.records, columns=fields, dtype=object)
        chunk.insert(0, SNAPSHOT_DATE_COLUMN, snapshot)
        read.rows, read.records = read.rows + len(chunk), []
        return chunk

    def chunks() -> Iterator[pd.DataFrame]:
        for page in api.read_pages(endpoint, context.log):
            read.total, read.pages = page.total, page.pages
            read.requests, read.retries = read.requests + 1, read.retries + page.retries
            read.bytes += page.bytes
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
        # The manifest's drift is the stored rows' (none misses a field): a record rejected for a
        # missing field is judged by the reject-rate audit, not as a schema change.
        manifest = {
            "endpoint": endpoint,
            SNAPSHOT_DATE_COLUMN: snapshot,
            "api_total": read.total,
            "pages": read.pages,
            "rows_valid": read.rows,
            "rows_rejected": len(read.rejects),
            "extra_fields": sorted(read.loaded_extra_fields),
            "missing_fields": [],
            "run_id": context.run.run_id,
        }
        rejects = pd.DataFrame(read.rejects, columns=Reject._fields, dtype=object)
        rejects.insert(1, SNAPSHOT_DATE_COLUMN, snapshot)
        match = {"endpoint": endpoint}
        sidecars = [
            Sidecar(RAW_SCHEMA, MANIFEST_TABLE, pd.DataFrame([manifest]), match),
            Sidecar(RAW_SCHEMA, REJECTS_TABLE, rejects, match),
        ]
        figures = {  # numeric figures of the read, for the UI's plots
            "api_total": read.total,
            "rows_valid": read.rows,
            "rejected_records": len(read.rejects),
            "pages": read.pages,
            "requests": read.requests,
            "retries": read.retries,
            "api_s": round(time.perf_counter() - start.wall, 3),
            "api_mb": round(read.bytes / 2**20, 3),
            "extra_fields": ", ".join(extra) or "none",
            "missing_fields": ", ".join(missing) or "none",
        }
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
