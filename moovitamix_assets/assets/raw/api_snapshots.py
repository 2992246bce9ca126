"""Raw layer: one daily snapshot of each MooVitamix API endpoint, stored as returned."""

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
    out = frame.copy()
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


def build_raw_asset(endpoint: str) -> dg.AssetsDefinition:
    """Build the raw snapshot asset of one API endpoint."""

    @dg.asset(
        name=endpoint,
        key_prefix=[RAW_SCHEMA],
        description=DESCRIPTIONS[endpoint],
        group_name=INGESTION_GROUP,
        kinds={"api", "postgres"},
        partitions_def=daily_partitions,
        io_manager_key="warehouse_io_manager",
        metadata={"partition_expr": SNAPSHOT_DATE_COLUMN},
        freshness_policy=DAILY_FRESHNESS,
    )
    def _raw_snapshot(
        context: dg.AssetExecutionContext,
        moovitamix_api: MoovitamixApiResource,
        postgres: PostgresResource,
    ) -> dg.Output[FrameWithSidecars]:
        start = start_step_figures()
        snapshot = snapshot_date_for(context.partition_key)
        read = moovitamix_api.read_endpoint(endpoint, log=context.log)
        summary = SnapshotSummary(
            endpoint=endpoint,
            snapshot_date=snapshot,
            api_total=read.total,
            pages=read.pages,
            rows_valid=len(read.frame),
            rows_rejected=len(read.rejects),
            # The manifest's drift (judged by the schema audit) is that of the stored rows: a
            # record rejected for a missing key is in raw.rejects, under the reject-rate audit.
            extra_fields=list(read.loaded_extra_fields),
            missing_fields=list(read.loaded_missing_fields),
            run_id=context.run.run_id,
        )
        ensure_bookkeeping_tables(postgres.engine())
        if len(read.rejects):
            context.log.warning(
                f"/{endpoint}: {len(read.rejects)} record(s) failed validation and were kept in "
                f"{RAW_SCHEMA}.rejects for {snapshot}; first: page {read.rejects.iloc[0]['page']}, "
                f"reason: {read.rejects.iloc[0]['reason']}"
            )
        # The raw partition, its manifest row and its rejects are written in one transaction.
        return dg.Output(
            FrameWithSidecars(
                with_snapshot_date(read.frame, snapshot),
                bookkeeping_sidecars(summary, read.rejects),
            ),
            # CPU and memory of the read; the IO manager's load figures follow separately.
            metadata=finish_step_figures(context, read_metadata(read), start),
        )

    return _raw_snapshot


raw_users, raw_tracks, raw_listen_history = (build_raw_asset(e) for e in ENDPOINTS)
raw_assets = [raw_users, raw_tracks, raw_listen_history]
