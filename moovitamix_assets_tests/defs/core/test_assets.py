"""Write-audit-publish in the merge, and the Dagster assets end to end on a real database."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from moovitamix_assets.defs.core.assets import (
    MergeResult,
    core_assets,
    merge_listen_events,
    merge_tracks,
    merge_users,
)
from moovitamix_assets.defs.ingestion.audits import SnapshotAuditError
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets_tests.defs.core.raw_tables import core_state, load_raw_snapshot
from moovitamix_assets_tests.defs.core.test_odd_records import history, track, user

DAY = date(2026, 11, 10)
NEXT = DAY + timedelta(days=1)
N = 150


@pytest.fixture
def engine(postgres_resource: PostgresResource) -> sa.Engine:
    engine = postgres_resource.engine()
    load_raw_snapshot(engine, "users", DAY, [user(i) for i in range(1, N + 1)])
    load_raw_snapshot(engine, "tracks", DAY, [track(i) for i in range(1, N + 1)])
    load_raw_snapshot(engine, "listen_history", DAY, [history(i, [i]) for i in range(1, N + 1)])
    for merge in (merge_users, merge_tracks, merge_listen_events):
        merge(engine, DAY)
    return engine


@pytest.mark.parametrize(
    ("endpoint", "bad_load", "audit"),
    [
        # The API announced more records than were stored or rejected.
        ("users", {"api_total": N + 40}, "completeness"),
        # The read never finished: no manifest row.
        ("tracks", {"manifest": False}, "completeness"),
        # The API served a field the contract does not know.
        ("listen_history", {"extra_fields": ["mood"]}, "schema_drift"),
        # Too many records failed validation.
        ("users", {"rows_rejected": 10}, "reject_rate"),
    ],
)
def test_a_snapshot_failing_a_blocking_audit_never_reaches_core(
    engine: sa.Engine, endpoint: str, bad_load: dict, audit: str
) -> None:
    records = {
        "users": [user(i, first_name="Changed") for i in range(1, N + 20)],
        "tracks": [track(i, name="changed") for i in range(1, N + 20)],
        "listen_history": [history(i, [i, i + 1]) for i in range(1, N + 20)],
    }[endpoint]
    load_raw_snapshot(engine, endpoint, NEXT, records, **bad_load)
    before = core_state(engine)
    merge = {"users": merge_users, "tracks": merge_tracks, "listen_history": merge_listen_events}

    with pytest.raises(SnapshotAuditError) as raised:
        merge[endpoint](engine, NEXT)

    message = str(raised.value)
    assert audit in message and endpoint in message and NEXT.isoformat() in message
    assert audit in [f.name for f in raised.value.failures]
    assert core_state(engine) == before
    with engine.connect() as conn:
        logged = conn.execute(
            sa.text("SELECT count(*) FROM core.merge_log WHERE snapshot_date = :d"), {"d": NEXT}
        ).scalar_one()
    assert logged == 0


def test_a_warning_audit_does_not_block(engine: sa.Engine) -> None:
    # Three times the rows of the day before: the volume audit warns, the merge goes on.
    load_raw_snapshot(engine, "users", NEXT, [user(i) for i in range(1, 3 * N + 1)])
    result = merge_users(engine, NEXT)
    assert result.counts["inserted"] == 2 * N
    assert [a.name for a in result.audits if not a.passed] == ["volume_change"]


def test_core_assets_materialize_with_metadata(postgres_resource: PostgresResource) -> None:
    engine = postgres_resource.engine()
    load_raw_snapshot(engine, "users", DAY, [user(i) for i in range(1, N + 1)])
    load_raw_snapshot(engine, "tracks", DAY, [track(i) for i in range(1, N + 1)])
    load_raw_snapshot(engine, "listen_history", DAY, [history(i, [i, 1]) for i in range(1, N + 1)])

    result = dg.materialize(
        core_assets, partition_key=DAY.isoformat(), resources={"postgres": postgres_resource}
    )

    assert result.success
    metadata = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.asset_materializations_for_node("core__users")
        + result.asset_materializations_for_node("core__tracks")
        + result.asset_materializations_for_node("core__listen_events")
        + result.asset_materializations_for_node("core__user_track_interactions")
    }
    assert metadata["core/users"]["inserted"].value == N
    assert metadata["core/users"]["dagster/row_count"].value == N
    assert metadata["core/listen_events"]["snapshot_pairs"].value == 2 * N - 1
    assert metadata["core/user_track_interactions"]["dagster/row_count"].value == 2 * N - 1
    assert isinstance(metadata["core/users"]["merge_s"].value, float)


def test_asset_definitions_follow_the_layer_conventions() -> None:
    specs = {a.key.to_user_string(): a for a in core_assets}
    assert set(specs) == {
        "core/users",
        "core/tracks",
        "core/listen_events",
        "core/user_track_interactions",
    }
    users = specs["core/users"]
    assert users.group_names_by_key[users.key] == "core"
    assert dg.AssetKey(["raw", "users"]) in users.dependency_keys
    events = specs["core/listen_events"]
    assert {
        dg.AssetKey(["raw", "listen_history"]),
        dg.AssetKey(["core", "users"]),
        dg.AssetKey(["core", "tracks"]),
    } <= set(events.dependency_keys)
    for asset in core_assets:
        assert asset.partitions_def is not None
        assert "postgres" in asset.specs_by_key[asset.key].kinds


def test_concurrent_merges_of_one_day_serialize(engine: sa.Engine) -> None:
    # engine holds DAY merged; NEXT merged by four threads at once must equal one merge.
    load_raw_snapshot(engine, "users", NEXT, [user(i, first_name="Later") for i in range(2, N + 9)])
    barrier = threading.Barrier(4)

    def merge() -> MergeResult:
        barrier.wait()
        return merge_users(engine, NEXT)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: merge(), range(4)))

    inserted = sorted(r.counts["inserted"] for r in results)
    assert inserted == [0, 0, 0, 8], "one merge did the work, the others found it done"
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT count(*), count(*) FILTER (WHERE is_active) FROM core.users")
        ).one()
        merges = conn.execute(
            sa.text("SELECT merges FROM core.merge_log WHERE snapshot_date = :d"), {"d": NEXT}
        ).scalar_one()
    assert tuple(rows) == (N + 8, N + 7) and merges == 4
