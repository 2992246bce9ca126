"""Raw layer: one daily snapshot of each MooVitamix API endpoint, stored as returned."""

import itertools
from collections.abc import Iterator
from datetime import date

import dagster as dg
import pandas as pd

from moovitamix_assets.assets.raw.snapshots import (
    SnapshotSummary,
    bookkeeping_sidecars,
    ensure_bookkeeping_tables,
)
from moovitamix_assets.checks.step_figures import finish_step_figures, start_step_figures
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
from moovitamix_assets.models.records import ENDPOINT_FIELDS, FieldKind, empty_frame
from moovitamix_assets.partitions import daily_partitions, snapshot_date_for
from moovitamix_assets.resources.api import EndpointRead, EndpointStream, MoovitamixApiResource
from moovitamix_assets.resources.database import PostgresResource
from moovitamix_assets.resources.io_manager import (
    FrameStream,
    FrameWithSidecars,
    StreamEnd,
)
from moovitamix_assets.resources.pg_types import BIGINT, BIGINT_ARRAY, DATE, TEXT, TIMESTAMPTZ

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
        "rows_valid": dg.MetadataValue.int(read.rows),
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

_COLUMN_TYPES: dict[FieldKind, str] = {
    FieldKind.INTEGER: BIGINT,
    FieldKind.STRING: TEXT,
    FieldKind.DURATION: TEXT,  # "mm:ss" as sent
    FieldKind.TIMESTAMP: TIMESTAMPTZ,
    FieldKind.INTEGER_LIST: BIGINT_ARRAY,
}


def raw_column_types(endpoint: str) -> dict[str, str]:
    """Every column of a raw table with its PostgreSQL type, from the contract.

    Declared rather than inferred from the rows: a first read with no rows (a new service) would
    otherwise create a table of text columns that no later day's rows fit.
    """
    return {
        SNAPSHOT_DATE_COLUMN: DATE,
        **{spec.name: _COLUMN_TYPES[spec.kind] for spec in ENDPOINT_FIELDS[endpoint]},
    }


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


def snapshot_summary(read: EndpointRead, snapshot: date, run_id: str) -> SnapshotSummary:
    """The manifest row of one read."""
    return SnapshotSummary(
        endpoint=read.endpoint,
        snapshot_date=snapshot,
        api_total=read.total,
        pages=read.pages,
        rows_valid=read.rows,
        rows_rejected=len(read.rejects),
        # The manifest's drift (judged by the schema audit) is that of the stored rows: a
        # record rejected for a missing key is in raw.rejects, under the reject-rate audit.
        extra_fields=list(read.loaded_extra_fields),
        missing_fields=list(read.loaded_missing_fields),
        run_id=run_id,
    )


def snapshot_stream(
    context: dg.AssetExecutionContext,
    stream: EndpointStream,
    snapshot: date,
) -> FrameWithSidecars:
    """One endpoint's raw partition, stored while it is read, with its manifest and rejects.

    The IO manager COPYs each chunk of rows as the pages come in, then the manifest row and
    the rejects, all in one transaction: a failed read leaves the stored day as it was.
    """
    endpoint = stream.endpoint
    start = start_step_figures()

    def frames() -> Iterator[pd.DataFrame]:
        for frame in stream.frames():
            yield with_snapshot_date(frame, snapshot)

    def finish() -> StreamEnd:
        read = stream.result()
        if len(read.rejects):
            first = read.rejects.iloc[0]
            context.log.warning(
                f"/{endpoint}: {len(read.rejects)} record(s) failed validation and were kept in "
                f"{RAW_SCHEMA}.rejects for {snapshot}; first: page {first['page']}, "
                f"reason: {first['reason']}"
            )
        summary = snapshot_summary(read, snapshot, context.run.run_id)
        return StreamEnd(
            sidecars=bookkeeping_sidecars(summary, read.rejects),
            # CPU and memory of the read and its load, which ran together.
            metadata=finish_step_figures(
                context, read_metadata(read), start, asset_key=RAW_KEYS[endpoint]
            ),
        )

    template = with_snapshot_date(empty_frame(endpoint), snapshot)
    # Timestamps travel as the API's validated ISO texts; the COPY writes them as timestamptz.
    return FrameWithSidecars(
        FrameStream(
            template=template, frames=frames, finish=finish, types=raw_column_types(endpoint)
        )
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
    """Daily snapshots of the MooVitamix API's endpoints, stored while they are read."""
    # One step for the whole API source, like Dagster's own API integrations. Each output is a
    # stream: the IO manager COPYs every chunk of rows while the next pages are fetched, so the
    # service and PostgreSQL work at the same time (bench/bench_ingestion.py measures it), and
    # memory holds a chunk, not an endpoint. An endpoint that fails stops the step there, naming
    # the endpoint and page; the endpoints stored before it keep today's snapshot.
    snapshot = snapshot_date_for(context.partition_key)
    ensure_bookkeeping_tables(postgres.engine())
    streams = [
        moovitamix_api.stream_endpoint(endpoint, log=context.log, timestamps_as_text=True)
        for endpoint in ENDPOINTS
        if RAW_KEYS[endpoint] in context.selected_asset_keys
    ]
    # Each endpoint's pages are fetched while the previous one's last rows are stored.
    for current, following in itertools.pairwise(streams):
        current.read_ahead(following)
    try:
        for stream in streams:
            yield dg.Output(
                snapshot_stream(context, stream, snapshot),
                output_name=RAW_KEYS[stream.endpoint].to_python_identifier(),
            )
    finally:
        for stream in streams:  # a failed endpoint stops the pages read ahead for the next
            stream.close()


raw_assets = [raw_snapshots]
