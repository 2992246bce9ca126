"""Core checks on hand-made data in a real PostgreSQL: pass on good data, fail on bad, and subset.

The raw snapshots are written directly (as the raw layer stores them), merged by the real merge
functions, then the check ops run through Dagster with the core assets.
"""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from moovitamix_assets.defs.core import checks
from moovitamix_assets.defs.core.assets import (
    CORE_USERS,
    core_assets,
    interaction_figures,
    merge_listen_events,
    merge_tracks,
    merge_users,
)
from moovitamix_assets.defs.core.checks import (
    CORE_CHECKS,
    core_checks,
    run_core_audits,
)
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets_tests.checks.pipeline import evaluations, materialized, metadata
from moovitamix_assets_tests.defs.core.raw_tables import load_raw_snapshot
from moovitamix_assets_tests.defs.core.test_odd_records import history, track, user

DAY = date(2026, 11, 10)
N = 100
ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN


def load_day(
    engine: sa.Engine,
    day: date = DAY,
    users: list[dict] | None = None,
    histories: list[dict] | None = None,
) -> None:
    """Store one raw day (good data unless given) and merge it into core."""
    load_raw_snapshot(engine, "users", day, users or [user(i) for i in range(1, N + 1)])
    load_raw_snapshot(engine, "tracks", day, [track(i) for i in range(1, N + 1)])
    load_raw_snapshot(
        engine,
        "listen_history",
        day,
        histories or [history(i, [i, i % N + 1]) for i in range(1, N + 1)],
    )
    for merge in (merge_users, merge_tracks, merge_listen_events):
        merge(engine, day)
    interaction_figures(engine)


def run_checks(
    postgres: PostgresResource,
    selection: dg.AssetSelection | None = None,
    day: date = DAY,
) -> dg.ExecuteInProcessResult:
    """Materialize the core assets (a re-merge changes nothing) and evaluate their checks."""
    return dg.materialize(
        [*core_assets, *core_checks],
        selection=selection,
        partition_key=day.isoformat(),
        resources={"postgres": postgres},
        raise_on_error=False,
    )


@pytest.fixture
def engine(postgres_resource: PostgresResource) -> sa.Engine:
    return postgres_resource.engine()


def test_good_core_data_passes_every_check(
    engine: sa.Engine, postgres_resource: PostgresResource
) -> None:
    load_day(engine)
    result = run_checks(postgres_resource)
    assert result.success
    found = evaluations(result)
    assert set(found) == {
        (f"core/{table}", check.name) for table, checks in CORE_CHECKS.items() for check in checks
    }
    for key, evaluation in found.items():
        assert evaluation.passed, (key, evaluation.description)
        assert evaluation.partition == DAY.isoformat()
        assert metadata(evaluation)["newest_merged_snapshot"] == DAY.isoformat()
    assert metadata(found[("core/listen_events", "orphan_rate")])["observed"] == 0.0


def test_a_duplicated_primary_key_fails_and_blocks(
    engine: sa.Engine, postgres_resource: PostgresResource
) -> None:
    load_day(engine)
    with engine.begin() as conn:
        # A table restored without its constraint lets a duplicate in.
        conn.execute(sa.text("ALTER TABLE core.users DROP CONSTRAINT users_pkey"))
        conn.execute(sa.text("INSERT INTO core.users SELECT * FROM core.users WHERE id = 7"))

    result = run_checks(postgres_resource)

    check = evaluations(result)[("core/users", "primary_key")]
    assert not check.passed and check.severity == ERROR and check.blocking
    values = metadata(check)
    assert (values["observed"], values["threshold"]) == (1, 0)
    assert values["has_constraint"] == 0 and values["duplicate_keys"] == 1
    assert "constraint on (id) missing" in check.description
    # Blocking: what reads core.users in the same run does not start.
    assert not result.success
    assert "core/listen_events" not in materialized(result)


def test_orphans_over_the_threshold_fail_without_blocking(
    engine: sa.Engine, postgres_resource: PostgresResource
) -> None:
    # Every user listened to one known track and to one the catalogue never had: 50% orphans.
    load_day(engine, histories=[history(i, [i, 10_000 + i]) for i in range(1, N + 1)])

    result = run_checks(postgres_resource)

    check = evaluations(result)[("core/listen_events", "orphan_rate")]
    assert not check.passed and check.severity == ERROR and not check.blocking
    values = metadata(check)
    assert (values["observed"], values["threshold"]) == (0.5, 0.15)
    assert (values["orphan_pairs"], values["unknown_track_pairs"]) == (N, N)
    assert values["stale_reference_flags"] == 0
    assert result.success and "core/user_track_interactions" in materialized(result)


def test_a_wrong_reference_flag_fails_the_orphan_check(engine: sa.Engine) -> None:
    load_day(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE core.listen_events SET track_known = false WHERE user_id = 3"))
    # Audited directly: a merge in the same run would re-check the flag and repair it.
    ((_, audit),) = run_core_audits(engine, {"listen_events": ["orphan_rate"]})
    assert not audit.passed and audit.figures["stale_reference_flags"] == 2
    assert audit.observed == 0.0 and "flag that is wrong" in audit.description


def test_odd_timestamps_and_emails_only_warn(
    engine: sa.Engine, postgres_resource: PostgresResource
) -> None:
    users = [user(i) for i in range(1, N + 1)]
    for i in range(3):  # updated before created
        users[i] = user(i + 1, updated_at="2025-06-01T00:00:00.000001")
    users[3] = user(4, updated_at="2027-01-01T00:00:00")  # after the snapshot's day
    for i in range(10, 12):
        users[i] = user(i + 1, email="not-an-address")
    load_day(engine, users=users)

    result = run_checks(postgres_resource)

    assert result.success  # warnings never stop the run
    found = evaluations(result)
    stamps = found[("core/users", "timestamps_sane")]
    assert not stamps.passed and stamps.severity == WARN and not stamps.blocking
    values = metadata(stamps)
    assert (values["observed"], values["threshold"]) == (4, 0)
    assert (values["updated_before_created"], values["future_timestamps"]) == (3, 1)
    assert found[("core/tracks", "timestamps_sane")].passed
    emails = found[("core/users", "email_validity")]
    assert not emails.passed and emails.severity == WARN
    assert (metadata(emails)["observed"], metadata(emails)["threshold"]) == (0.98, 0.99)
    assert metadata(emails)["invalid_emails"] == 2


def test_a_snapshot_dropping_records_warns_on_inactive_share(
    engine: sa.Engine, postgres_resource: PostgresResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_day(engine)
    next_day = DAY + timedelta(days=1)
    # The API lists only 40 of the 100 users: 60% of the recently seen users are inactive.
    load_day(engine, next_day, users=[user(i) for i in range(1, 41)])

    found = evaluations(run_checks(postgres_resource, day=next_day))

    inactive = found[("core/users", "inactive_share")]
    assert not inactive.passed and inactive.severity == WARN
    assert (metadata(inactive)["observed"], metadata(inactive)["threshold"]) == (0.6, 0.5)
    assert found[("core/tracks", "inactive_share")].passed
    # Records last seen before the window do not count: they are history, not today's churn.
    monkeypatch.setattr(checks, "INACTIVE_WINDOW_DAYS", 0)
    ((_, later),) = run_core_audits(engine, {"users": ["inactive_share"]})
    assert later.observed == 0.0 and later.passed and "in the 0 days" in later.description


def test_an_unusable_interaction_fails_and_blocks(engine: sa.Engine) -> None:
    load_day(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE core.listen_events SET weight = 'NaN' WHERE user_id = 1"))
        conn.execute(sa.text("DELETE FROM core.tracks WHERE id = 5"))
    # Audited directly: a materialization would merge track 5 back from raw first.
    ((table, audit),) = run_core_audits(engine, {"user_track_interactions": ["valid_interactions"]})
    assert table == "user_track_interactions"
    assert not audit.passed and audit.severity == "ERROR" and audit.blocking
    assert (audit.observed, audit.threshold) == (4, 0)
    assert (audit.figures["bad_weights"], audit.figures["unknown_references"]) == (2, 2)


def test_selecting_one_asset_runs_only_its_checks(
    engine: sa.Engine, postgres_resource: PostgresResource
) -> None:
    load_day(engine)
    # core/users and core/tracks share one check op; select core/users alone.
    result = run_checks(postgres_resource, selection=dg.AssetSelection.assets(CORE_USERS))

    assert result.success
    assert materialized(result) == {"core/users"}
    assert set(evaluations(result)) == {
        ("core/users", "primary_key"),
        ("core/users", "timestamps_sane"),
        ("core/users", "email_validity"),
        ("core/users", "inactive_share"),
    }
