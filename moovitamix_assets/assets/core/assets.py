"""Core layer assets: thin wrappers over the set-based merges of ``merge.py``.

Partition D of a core asset means "merge raw snapshot D". A core rebuild reads only the stored raw
tables, never the API, so any stored day can be merged again (re-merging is a no-op).
"""

from datetime import date

import dagster as dg

from moovitamix_assets.assets.core.merge import (
    MergeResult,
    merge_listen_events,
    merge_tracks,
    merge_users,
    rebuild_interactions,
)
from moovitamix_assets.assets.core.schema import WEIGHT_SQL
from moovitamix_assets.constants import (
    CORE_GROUP,
    CORE_SCHEMA,
    LISTEN_HISTORY_ENDPOINT,
    RAW_SCHEMA,
    TRACKS_ENDPOINT,
    USERS_ENDPOINT,
)
from moovitamix_assets.freshness import DAILY_FRESHNESS
from moovitamix_assets.partitions import daily_partitions
from moovitamix_assets.step_figures import StepStart, finish_step_figures, start_step_figures
from moovitamix_assets.warehouse.database import PostgresResource

RAW_USERS = dg.AssetKey([RAW_SCHEMA, USERS_ENDPOINT])
RAW_TRACKS = dg.AssetKey([RAW_SCHEMA, TRACKS_ENDPOINT])
RAW_LISTEN_HISTORY = dg.AssetKey([RAW_SCHEMA, LISTEN_HISTORY_ENDPOINT])
CORE_USERS = dg.AssetKey([CORE_SCHEMA, "users"])
CORE_TRACKS = dg.AssetKey([CORE_SCHEMA, "tracks"])
CORE_LISTEN_EVENTS = dg.AssetKey([CORE_SCHEMA, "listen_events"])
CORE_INTERACTIONS = dg.AssetKey([CORE_SCHEMA, "user_track_interactions"])

_COMMON = {
    "key_prefix": [CORE_SCHEMA],
    "group_name": CORE_GROUP,
    "kinds": {"postgres"},
    "partitions_def": daily_partitions,
    "freshness_policy": DAILY_FRESHNESS,
}


def _materialization(
    context: dg.AssetExecutionContext, result: MergeResult, start: StepStart
) -> dg.MaterializeResult:
    warnings = [a for a in result.audits if not a.passed]
    for audit in warnings:
        context.log.warning(
            f"raw audit {audit.name} of {audit.endpoint} {audit.snapshot_date} ({audit.severity}, "
            f"not blocking): {audit.description}"
        )
    metadata: dict[str, object] = dict(result.metadata())
    metadata["table"] = dg.MetadataValue.text(f"{CORE_SCHEMA}.{result.table}")
    if result.snapshot_date is not None:
        metadata["snapshot_date"] = dg.MetadataValue.text(result.snapshot_date.isoformat())
    metadata["raw_audit_warnings"] = len(warnings)
    return dg.MaterializeResult(metadata=finish_step_figures(context, metadata, start))


@dg.asset(name="users", deps=[RAW_USERS], **_COMMON)
def core_users(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Current state of every user ever seen: one row per id, merged from the raw snapshot."""
    start = start_step_figures()
    result = merge_users(postgres.engine(), date.fromisoformat(context.partition_key))
    return _materialization(context, result, start)


@dg.asset(name="tracks", deps=[RAW_TRACKS], **_COMMON)
def core_tracks(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Current state of every track ever seen: one row per id, merged from the raw snapshot."""
    start = start_step_figures()
    result = merge_tracks(postgres.engine(), date.fromisoformat(context.partition_key))
    return _materialization(context, result, start)


@dg.asset(name="listen_events", deps=[RAW_LISTEN_HISTORY, CORE_USERS, CORE_TRACKS], **_COMMON)
def core_listen_events(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Listening normalized to one row per (user, track) pair, orphans kept and flagged."""
    start = start_step_figures()
    result = merge_listen_events(postgres.engine(), date.fromisoformat(context.partition_key))
    return _materialization(context, result, start)


@dg.asset(
    name="user_track_interactions",
    deps=[CORE_LISTEN_EVENTS],
    metadata={"weight": WEIGHT_SQL},
    **_COMMON,
)
def core_user_track_interactions(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Weighted (user, track) interactions of the current listening state: the models' input."""
    start = start_step_figures()
    result = rebuild_interactions(postgres.engine())
    return _materialization(context, result, start)


core_assets = [core_users, core_tracks, core_listen_events, core_user_track_interactions]
