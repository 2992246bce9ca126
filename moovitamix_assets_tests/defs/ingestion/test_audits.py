"""Each raw audit passes on a good snapshot and fails on a bad one, with the right severity."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from moovitamix_assets.defs.ingestion.audits import AuditResult, audit_snapshot
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets_tests.defs.core.raw_tables import load_raw_snapshot
from moovitamix_assets_tests.defs.core.test_odd_records import history, track, user

DAY = date(2026, 11, 10)
N = 200


@pytest.fixture
def engine(postgres_resource: PostgresResource) -> sa.Engine:
    return postgres_resource.engine()


def run(engine: sa.Engine, audit: str, endpoint: str, day: date = DAY) -> AuditResult:
    with engine.connect() as conn:
        (result,) = audit_snapshot(conn, endpoint, day, [audit])
    return result


def test_a_good_snapshot_passes_every_audit(engine: sa.Engine) -> None:
    load_raw_snapshot(engine, "users", DAY - timedelta(days=1), [user(i) for i in range(N)])
    load_raw_snapshot(engine, "users", DAY, [user(i) for i in range(N + 10)], rows_rejected=1)
    with engine.connect() as conn:
        results = audit_snapshot(conn, "users", DAY)
    assert [r.name for r in results] == [
        "completeness",
        "unique_keys",
        "required_fields",
        "schema_drift",
        "reject_rate",
        "volume_change",
    ]
    assert all(r.passed for r in results), [r.description for r in results if not r.passed]
    assert [r for r in results if r.blocking and not r.passed] == []
    assert {r.name: (r.severity, r.blocking) for r in results}["volume_change"] == ("WARN", False)
    assert all(r.severity == "ERROR" and r.blocking for r in results[:-1])
    assert results[0].observed == results[0].threshold == N + 11


def test_completeness_fails_on_missing_rows_and_missing_manifest(engine: sa.Engine) -> None:
    load_raw_snapshot(engine, "tracks", DAY, [track(i) for i in range(N)], api_total=N + 3)
    short = run(engine, "completeness", "tracks")
    assert not short.passed and (short.observed, short.threshold) == (N, N + 3)
    load_raw_snapshot(engine, "users", DAY, [user(i) for i in range(N)], manifest=False)
    missing = run(engine, "completeness", "users")
    assert not missing.passed and "no manifest" in missing.description


@pytest.mark.parametrize("endpoint", ["users", "listen_history"])
def test_unique_keys(engine: sa.Engine, endpoint: str) -> None:
    make = user if endpoint == "users" else (lambda i: history(i, [1]))
    good = [make(i) for i in range(N)] + [make(1)]  # one duplicate in 201 rows: tolerated
    if endpoint == "listen_history":
        good += [history(None, [1])] * 5  # null user ids are not duplicates of each other
    load_raw_snapshot(engine, endpoint, DAY, good)
    assert run(engine, "unique_keys", endpoint).passed
    bad = [make(i) for i in range(N)] + [make(i) for i in range(10)]  # 10 in 210 rows
    load_raw_snapshot(engine, endpoint, DAY, bad)
    result = run(engine, "unique_keys", endpoint)
    assert not result.passed and result.observed == 10 and result.blocking


def test_required_fields(engine: sa.Engine) -> None:
    load_raw_snapshot(engine, "listen_history", DAY, [history(i, [1]) for i in range(N)])
    assert run(engine, "required_fields", "listen_history").passed
    bad = [history(i, [1]) for i in range(N)] + [history(N, [1]) | {"updated_at": None}]
    load_raw_snapshot(engine, "listen_history", DAY, bad)
    result = run(engine, "required_fields", "listen_history")
    assert not result.passed and result.observed == 1 and "updated_at: 1" in result.description
    load_raw_snapshot(engine, "users", DAY, [user(i) for i in range(N)] + [user(None)])
    assert not run(engine, "required_fields", "users").passed


def test_schema_drift(engine: sa.Engine) -> None:
    load_raw_snapshot(engine, "tracks", DAY, [track(i) for i in range(N)])
    assert run(engine, "schema_drift", "tracks").passed
    load_raw_snapshot(
        engine, "tracks", DAY, [track(i) for i in range(N)], extra_fields=["bpm"], missing_fields=[]
    )
    extra = run(engine, "schema_drift", "tracks")
    assert not extra.passed and "bpm" in extra.description
    load_raw_snapshot(engine, "tracks", DAY, [track(i) for i in range(N)])
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE raw.tracks ALTER COLUMN id TYPE text"))
    retyped = run(engine, "schema_drift", "tracks")
    assert not retyped.passed and "id is text not bigint" in retyped.description


def test_reject_rate(engine: sa.Engine) -> None:
    load_raw_snapshot(engine, "users", DAY, [user(i) for i in range(N)], rows_rejected=2)
    ok = run(engine, "reject_rate", "users")
    assert ok.passed and ok.observed == pytest.approx(2 / (N + 2), abs=1e-6)
    load_raw_snapshot(engine, "users", DAY, [user(i) for i in range(N)], rows_rejected=5)
    assert not run(engine, "reject_rate", "users").passed


def test_volume_change_warns_without_blocking(engine: sa.Engine) -> None:
    load_raw_snapshot(engine, "users", DAY - timedelta(days=3), [user(i) for i in range(N)])
    first = run(engine, "volume_change", "users", DAY - timedelta(days=3))
    assert first.passed and first.observed is None  # nothing to compare with
    # The previous *stored* day (three days before) is the reference, not the calendar's.
    load_raw_snapshot(engine, "users", DAY, [user(i) for i in range(N + N // 4)])
    assert run(engine, "volume_change", "users").passed
    load_raw_snapshot(engine, "users", DAY, [user(i) for i in range(N // 3)])
    drop = run(engine, "volume_change", "users")
    assert not drop.passed and drop.severity == "WARN" and not drop.blocking
    assert drop.observed == pytest.approx(N // 3 / N - 1, abs=1e-6)


def test_unknown_endpoint_is_refused(engine: sa.Engine) -> None:
    with engine.connect() as conn, pytest.raises(ValueError, match="unknown"):
        audit_snapshot(conn, "playlists", DAY)


def test_every_audit_fails_without_the_raw_table(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        results = audit_snapshot(conn, "tracks", DAY)
    assert len(results) == 6 and not any(r.passed for r in results)
    assert {r.description for r in results} == {"table raw.tracks does not exist"}
