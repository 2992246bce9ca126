"""Raw layer: one daily snapshot of each MooVitamix API endpoint, stored as the API served it."""

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

import dagster as dg
import pandas as pd

from moovitamix_assets.constants import (
    ENDPOINTS,
    INGESTION_GROUP,
    LISTEN_HISTORY_ENDPOINT,
    RAW_SCHEMA,
    SNAPSHOT_DATE_COLUMN,
    TRACKS_ENDPOINT,
    USERS_ENDPOINT,
)
from moovitamix_assets.contract import Reject, fields_of, validate_page
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
_DRIFT: Final = ("extra_fields", "missing_fields", "loaded_extra_fields")
_REJECT_FIELDS: Final = [f.name for f in dataclasses.fields(Reject)]

DESCRIPTIONS: Final[dict[str, str]] = {
    USERS_ENDPOINT: "Daily snapshot of every MooVitamix user account, as the API served it.",
    TRACKS_ENDPOINT: "Daily snapshot of the whole MooVitamix catalogue of tracks, as served.",
    LISTEN_HISTORY_ENDPOINT: (
        "Daily snapshot of every user's listening history (one row per user, track ids as a list)."
    ),
}


def raw_spec(endpoint: str) -> dg.AssetSpec:
    """The raw snapshot asset of one API endpoint, as the UI and the lineage show it."""
    return dg.AssetSpec(
        key=RAW_KEYS[endpoint],
        description=DESCRIPTIONS[endpoint],
        group_name=INGESTION_GROUP,
        kinds={"api", "postgres"},
        metadata={
            "partition_expr": SNAPSHOT_DATE_COLUMN,
            **columns.for_asset(RAW_KEYS[endpoint]).definition_metadata(),
        },
        freshness_policy=DAILY_FRESHNESS,
    ).with_io_manager_key("warehouse_io_manager")


@dataclass
class EndpointRead:
    """What one read of an endpoint found, besides its valid rows."""

    endpoint: str
    total: int = 0
    pages: int = 0
    requests: int = 0
    retries: int = 0
    bytes: int = 0
    rows: int = 0
    rejects: list[Reject] = field(default_factory=list)
    # Field drift, as in ValidatedPage: of any record, and the extra fields of the stored ones.
    extra_fields: set[str] = field(default_factory=set)
    missing_fields: set[str] = field(default_factory=set)
    loaded_extra_fields: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.perf_counter)

    def metadata(self) -> dict[str, int | float | str]:
        """Numeric figures of the read, for the UI's plots."""
        return {
            "api_total": self.total,
            "rows_valid": self.rows,
            "rejected_records": len(self.rejects),
            "pages": self.pages,
            "requests": self.requests,
            "retries": self.retries,
            "api_s": round(time.perf_counter() - self.started, 3),
            "api_mb": round(self.bytes / 2**20, 3),
            "extra_fields": ", ".join(sorted(self.extra_fields)) or "none",
            "missing_fields": ", ".join(sorted(self.missing_fields)) or "none",
        }


def snapshot_stream(
    context: dg.AssetExecutionContext,
    api: MoovitamixApiResource,
    endpoint: str,
    snapshot: date,
) -> FrameStream:
    """One endpoint's raw partition as a stream: its chunks, then its manifest row and rejects."""
    read, start, key = EndpointRead(endpoint), start_step_figures(), RAW_KEYS[endpoint]
    fields = fields_of(endpoint)

    def frame(records: list[dict[str, Any]]) -> pd.DataFrame:
        # The records as sent: PostgreSQL parses the timestamps' text in the COPY.
        read.rows += len(records)
        chunk = pd.DataFrame(records, columns=fields, dtype=object)
        chunk.insert(0, SNAPSHOT_DATE_COLUMN, snapshot)
        return chunk

    def chunks() -> Iterator[pd.DataFrame]:
        records: list[dict[str, Any]] = []
        for page in api.read_pages(endpoint, context.log):
            read.total, read.pages = page.total, page.pages
            read.requests, read.retries = read.requests + 1, read.retries + page.retries
            read.bytes += page.bytes
            checked = validate_page(endpoint, page.number, page.items)
            records += checked.records
            read.rejects += checked.rejects
            for drift in _DRIFT:
                getattr(read, drift).update(getattr(checked, drift))
            if len(records) >= CHUNK_RECORDS:
                yield frame(records)
                records = []
        if records:
            yield frame(records)

    def finish() -> tuple[list[Sidecar], dict[str, Any]]:
        if read.rejects:
            first = read.rejects[0]
            context.log.warning(
                f"/{endpoint}: {len(read.rejects)} record(s) failed validation and were kept in "
                f"{RAW_SCHEMA}.{REJECTS_TABLE} for {snapshot}; first: page {first.page}, record "
                f"{first.position}, field {first.field}: {first.reason}"
            )
        if read.extra_fields or read.missing_fields:
            context.log.warning(
                f"/{endpoint} schema drift: fields outside the contract "
                f"{sorted(read.extra_fields)}, contract fields missing "
                f"{sorted(read.missing_fields)}"
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
        rejects = pd.DataFrame(read.rejects, columns=_REJECT_FIELDS, dtype=object)
        rejects.insert(1, SNAPSHOT_DATE_COLUMN, snapshot)
        match = {"endpoint": endpoint}
        sidecars = [
            Sidecar(RAW_SCHEMA, MANIFEST_TABLE, pd.DataFrame([manifest]), match),
            Sidecar(RAW_SCHEMA, REJECTS_TABLE, rejects, match),
        ]
        return sidecars, finish_step_figures(context, read.metadata(), start, asset_key=key)

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
