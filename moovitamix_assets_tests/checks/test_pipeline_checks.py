"""The checks inside the daily graph: raw + core from the API stand-in into a real PostgreSQL.

Bad data comes from the API side: the stand-in's own knobs (track churn that orphans listening, a
bigger catalogue) and a loopback proxy that adds a field to every record, drops a record from a
page or repeats ids. A blocking raw check that fails must leave the core tables that
depend on it exactly as they were, while the rest of the day goes on.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from moovitamix_assets.constants import ENDPOINTS
from moovitamix_assets.defs.core.checks import CORE_CHECKS, run_core_audits
from moovitamix_assets.defs.ingestion.checks import RAW_CHECKS, run_raw_audits
from moovitamix_assets.partitions import utc_today
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets_tests.checks.fault_proxy import PageFaults, fault_proxy
from moovitamix_assets_tests.checks.pipeline import evaluations, materialized, metadata, run_day
from moovitamix_assets_tests.defs.core.raw_tables import core_state

pytestmark = [pytest.mark.http]

N = 300
ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN
CORE_TABLES = {
    "core/users": "core.users",
    "core/tracks": "core.tracks",
    "core/listen_events": "core.listen_events",
    "core/user_track_interactions": "core.user_track_interactions",
}


def test_a_good_day_passes_every_check_with_its_metadata(
    api_server, postgres_resource: PostgresResource
) -> None:
    today = utc_today()
    result = run_day(api_server(records=N).base_url, postgres_resource, today)

    assert result.success
    found = evaluations(result)
    expected = {(f"raw/{e}", c.name) for e in ENDPOINTS for c in RAW_CHECKS} | {
        (f"core/{t}", c.name) for t, checks in CORE_CHECKS.items() for c in checks
    }
    assert set(found) == expected and len(found) == 30
    for key, evaluation in found.items():
        assert evaluation.passed, (key, evaluation.description)
        assert evaluation.partition == today.isoformat(), key
        assert evaluation.description, key
        assert {"observed", "threshold"} <= set(evaluation.metadata), key
    # The audits' own verdict on blocking matches what the specs declared to Dagster.
    engine = postgres_resource.engine()
    declared = {key: e.blocking for key, e in found.items()}
    for endpoint in ENDPOINTS:
        for audit in run_raw_audits(engine, endpoint, today, [c.name for c in RAW_CHECKS]):
            assert declared[(f"raw/{endpoint}", audit.name)] == audit.blocking, audit.name
    selected = {t: [c.name for c in checks] for t, checks in CORE_CHECKS.items()}
    for table, audit in run_core_audits(engine, selected):
        assert declared[(f"core/{table}", audit.name)] == audit.blocking, audit.name
    completeness = metadata(found[("raw/users", "completeness")])
    assert completeness["observed"] == completeness["threshold"] == N
    assert found[("raw/users", "volume_change")].severity == WARN
    assert found[("core/users", "primary_key")].severity == ERROR


def _changed(before: dict[str, list[Any]], after: dict[str, list[Any]]) -> set[str]:
    return {asset for asset, table in CORE_TABLES.items() if before[table] != after[table]}


@pytest.mark.faults
@pytest.mark.parametrize(
    ("faults", "failing", "observed", "threshold", "blocked"),
    [
        pytest.param(
            PageFaults(drop_last_item={"users": {2}}),
            [("raw/users", "completeness")],
            N - 1,
            N,
            {"core/users", "core/listen_events", "core/user_track_interactions"},
            id="incomplete-read",
        ),
        pytest.param(
            # Two repeated ids on each of the 3 pages: 6 duplicates in 300 rows (2% > 1%).
            PageFaults(duplicate_ids={"users": 2, "tracks": 2}),
            [("raw/users", "unique_keys"), ("raw/tracks", "unique_keys")],
            6,
            0.01,
            set(CORE_TABLES),
            id="duplicated-ids",
        ),
        pytest.param(
            PageFaults(extra_fields={"listen_history": {"mood": "calm"}}),
            [("raw/listen_history", "schema_drift")],
            1,
            0,
            {"core/listen_events", "core/user_track_interactions"},
            id="schema-drift",
        ),
    ],
)
def test_a_failing_raw_snapshot_never_reaches_core(
    api_server,
    postgres_resource: PostgresResource,
    faults: PageFaults,
    failing: list[tuple[str, str]],
    observed: int,
    threshold: float,
    blocked: set[str],
) -> None:
    today = utc_today()
    yesterday = today - timedelta(days=1)
    engine = postgres_resource.engine()
    assert run_day(
        api_server(records=N, day=yesterday).base_url, postgres_resource, yesterday
    ).success
    before = core_state(engine)

    # No duplicates of the stand-in's own (a default the contract allows): the proxy's are counted.
    clean = api_server(records=N, day=today, duplicate_rate=0)
    with fault_proxy(clean.base_url, faults) as url:
        result = run_day(url, postgres_resource, today)

    assert not result.success
    found = evaluations(result)
    for key in failing:
        evaluation = found[key]
        assert not evaluation.passed and evaluation.severity == ERROR and evaluation.blocking, key
        assert evaluation.partition == today.isoformat()
        values = metadata(evaluation)
        assert (values["observed"], values["threshold"]) == (observed, threshold)
    # Nothing else failed: the faults hit exactly the audit meant to catch them.
    assert {key for key, e in found.items() if not e.passed} == set(failing)

    after = core_state(engine)
    assert blocked.isdisjoint(materialized(result))
    changed = _changed(before, after)
    interactions = "core/user_track_interactions"
    assert changed - {interactions} == set(CORE_TABLES) - blocked - {interactions}
    # The interactions are a view of core.listen_events and core.tracks: a merged tracks snapshot
    # shows in their track_active even when their own step is blocked; nothing else does.
    assert interactions not in changed or interactions not in blocked or "core/tracks" in changed
    with engine.connect() as conn:
        merged_today = set(
            conn.execute(
                sa.text("SELECT table_name FROM core.merge_log WHERE snapshot_date = :d"),
                {"d": today},
            ).scalars()
        )
    assert {f"core/{t}" for t in merged_today} == set(CORE_TABLES) - blocked - {
        "core/user_track_interactions"  # a view, not merged: never in the merge log
    }


def test_a_volume_jump_warns_and_the_day_goes_on(
    api_server, postgres_resource: PostgresResource
) -> None:
    today = utc_today()
    yesterday = today - timedelta(days=1)
    assert run_day(
        api_server(records=N, day=yesterday).base_url, postgres_resource, yesterday
    ).success

    result = run_day(api_server(records=2 * N, day=today).base_url, postgres_resource, today)

    assert result.success
    found = evaluations(result)
    for endpoint in ENDPOINTS:
        volume = found[(f"raw/{endpoint}", "volume_change")]
        assert not volume.passed and volume.severity == WARN and not volume.blocking
        assert metadata(volume)["observed"] == pytest.approx(1.0)
        assert metadata(volume)["threshold"] == 0.5
    assert set(CORE_TABLES) <= materialized(result)
    with postgres_resource.engine().connect() as conn:
        active = conn.execute(sa.text("SELECT count(*) FROM core.users WHERE is_active")).scalar()
        # Every distinct id of today's snapshot (the default data repeats a few ids).
        listed = conn.execute(
            sa.text("SELECT count(DISTINCT id) FROM raw.users WHERE snapshot_date = :d"),
            {"d": today},
        ).scalar()
    assert active == listed > 0.99 * 2 * N


def test_orphaned_listening_fails_an_error_check_without_blocking(
    api_server, postgres_resource: PostgresResource
) -> None:
    # Fast track churn: many listened tracks were removed before the first snapshot.
    result = run_day(
        api_server(records=N, track_churn=0.02).base_url, postgres_resource, utc_today()
    )

    orphans = evaluations(result)[("core/listen_events", "orphan_rate")]
    assert not orphans.passed and orphans.severity == ERROR and not orphans.blocking
    values = metadata(orphans)
    assert values["observed"] > values["threshold"] == 0.15
    assert values["orphan_pairs"] == values["unknown_track_pairs"] > 0
    assert "unknown track" in orphans.description
    # Interactions leave orphans out, so they are still built, without any orphan.
    assert result.success and "core/user_track_interactions" in materialized(result)
    with postgres_resource.engine().connect() as conn:
        left_out = conn.execute(
            sa.text(
                "SELECT count(*) FROM core.user_track_interactions i "
                "WHERE NOT EXISTS (SELECT 1 FROM core.tracks k WHERE k.id = i.track_id)"
            )
        ).scalar()
    assert left_out == 0
