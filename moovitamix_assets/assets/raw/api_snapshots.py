"""Raw layer: one daily snapshot of each MooVitamix API endpoint, stored as returned."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

import dagster as dg
import pandas as pd

from moovitamix_assets.assets.raw.snapshots import (
    SnapshotSummary,
    bookkeeping_sidecars,
    ensure_bookkeeping_tables,
)
from moovitamix_assets.checks.step_figures import (
    StepStart,
    finish_step_figures,
    start_step_figures,
)
from moovitamix_assets.constants import (
    ENDPOINTS,
    INGESTION_GROUP,
    LISTEN_HISTORY_ENDPOINT,
    RAW_SCHEMA,
    SNAPSHOT_DATE_COLUMN,
    TRACKS_ENDPOINT,
    USERS_ENDPOINT,
)
from moovitamix_assets.freshness import DAILY_FRESHNESS
from moovitamix_assets.partitions import daily_partitions, snapshot_date_for
from moovitamix_assets.resources.api import EndpointRead, MoovitamixApiResource
from moovitamix_assets.resources.database import PostgresResource
from moovitamix_assets.resources.io_manager import FrameWithSidecars

DESCRIPTIONS: dict[str, str] = {
    USERS_ENDPOINT: "Daily snapshot of every MooVitamix user account, as the API served it.",
    TRACKS_ENDPOINT: "Daily snapshot of the whole MooVitamix catalogue of tracks, as served.",
    LISTEN_HISTORY_ENDPOINT: (
        "Daily snapshot of every user's listening history (one row per user, track ids as a list)."
    ),
}


def with_snapshot_date(frame: pd.DataFrame, snapshot_date: date) -> pd.DataFrame:
    """Return the API records with the partition column the IO manager replaces by."""
    # Shallow: copy-on-write keeps ``frame`` as it was without duplicating its columns.
    out = frame.copy(deep=False)
    out.insert(0, SNAPSHOT_DATE_COLUMN, snapshot_date)
    return out


def read_metadata(read: EndpointRead) -> dict[str, dg.MetadataValue]:
    """Numeric figures of one endpoint read, for the UI's plots."""
    return {
        "api_total": dg.MetadataValue.int(read.total),
        "rows_valid": dg.MetadataValue.int(len(read.frame)),
        "rejected_records": dg.MetadataValue.int(len(read.rejects)),
        "pages": dg.MetadataValue.int(read.pages),
        "requests": dg.MetadataValue.int(read.requests),
        "retries": dg.MetadataValue.int(read.retries),
        # 1 when `total` moved mid-read and the endpoint was read again from page 1.
        "rereads": dg.MetadataValue.int(read.rereads),
        "api_seconds": dg.MetadataValue.float(round(read.api_seconds, 3)),
        "api_bytes": dg.MetadataValue.int(read.bytes),
        "extra_fields": dg.MetadataValue.text(", ".join(read.extra_fields) or "none"),
        "missing_fields": dg.MetadataValue.text(", ".join(read.missing_fields) or "none"),
    }


RAW_KEYS: dict[str, dg.AssetKey] = {e: dg.AssetKey([RAW_SCHEMA, e]) for e in ENDPOINTS}


def raw_spec(endpoint: str) -> dg.AssetSpec:
    """The raw snapshot asset of one API endpoint, as the UI and the lineage show it."""
    return dg.AssetSpec(
        key=RAW_KEYS[endpoint],
        description=DESCRIPTIONS[endpoint],
        group_name=INGESTION_GROUP,
        kinds={"api", "postgres"},
        metadata={"partition_expr": SNAPSHOT_DATE_COLUMN},
        freshness_policy=DAILY_FRESHNESS,
    ).with_io_manager_key("warehouse_io_manager")


@dataclass(frozen=True)
class _TimedRead:
    read: EndpointRead
    start: StepStart


class RawSnapshotError(Exception):
    """One or more endpoints could not be read; the others were stored."""


def snapshot_output(read: EndpointRead, snapshot: date, run_id: str) -> FrameWithSidecars:
    """The raw partition of one read, with its manifest row and rejects as sidecars."""
    summary = SnapshotSummary(
        endpoint=read.endpoint,
        snapshot_date=snapshot,
        api_total=read.total,
        pages=read.pages,
        rows_valid=len(read.frame),
        rows_rejected=len(read.rejects),
        # The manifest's drift (judged by the schema audit) is that of the stored rows: a
        # record rejected for a missing key is in raw.rejects, under the reject-rate audit.
        extra_fields=list(read.loaded_extra_fields),
        missing_fields=list(read.loaded_missing_fields),
        run_id=run_id,
    )
    # The raw partition, its manifest row and its rejects are written in one transaction.
    return FrameWithSidecars(
        with_snapshot_date(read.frame, snapshot), bookkeeping_sidecars(summary, read.rejects)
    )


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
) -> Iterator[dg.Output[FrameWithSidecars]]:
    """Daily snapshots of the MooVitamix API's endpoints; each is stored while the next is read."""
    # One step for the whole API source, like Dagster's own API integrations: the next
    # endpoint's pages are fetched while the IO manager COPYs the previous one, so the service
    # is kept busy instead of waiting for every load (bench/bench_ingestion.py measures it).
    snapshot = snapshot_date_for(context.partition_key)
    endpoints = [e for e in ENDPOINTS if RAW_KEYS[e] in context.selected_asset_keys]
    ensure_bookkeeping_tables(postgres.engine())

    def read(endpoint: str) -> _TimedRead:
        start = start_step_figures()
        return _TimedRead(moovitamix_api.read_endpoint(endpoint, log=context.log), start)

    failures: list[tuple[str, Exception]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="moovitamix-endpoint") as reader:
        pending = reader.submit(read, endpoints[0])
        for index, endpoint in enumerate(endpoints):
            try:
                done: _TimedRead | None = pending.result()
            except Exception as exc:  # noqa: BLE001 - reported below, after the other endpoints
                context.log.error(f"/{endpoint}: {exc}")
                failures.append((endpoint, exc))
                done = None
            if index + 1 < len(endpoints):
                pending = reader.submit(read, endpoints[index + 1])
            if done is None:
                continue
            if len(done.read.rejects):
                first = done.read.rejects.iloc[0]
                context.log.warning(
                    f"/{endpoint}: {len(done.read.rejects)} record(s) failed validation and were "
                    f"kept in {RAW_SCHEMA}.rejects for {snapshot}; first: page {first['page']}, "
                    f"reason: {first['reason']}"
                )
            yield dg.Output(
                snapshot_output(done.read, snapshot, context.run.run_id),
                output_name=RAW_KEYS[endpoint].to_python_identifier(),
                # CPU and memory while this endpoint was read (the previous one's load ran
                # alongside); the IO manager's load figures follow separately.
                metadata=finish_step_figures(
                    context, read_metadata(done.read), done.start, asset_key=RAW_KEYS[endpoint]
                ),
            )
    if failures:
        # Endpoints read successfully are stored; the step fails naming every one that was not.
        details = "; ".join(f"/{endpoint}: {exc}" for endpoint, exc in failures)
        raise RawSnapshotError(
            f"{len(failures)} of {len(endpoints)} endpoint(s) could not be read: {details}"
        ) from failures[0][1]


raw_assets = [raw_snapshots]
