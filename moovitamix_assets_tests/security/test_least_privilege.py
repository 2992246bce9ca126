"""deploy/sql/least_privilege.sql, run with psql on the real test server, then put to work.

The platform role must be able to do the whole daily job (raw and core materialized, an ml table
written by the IO manager) and nothing else; the serving role reads ml.user_recommendations only.
The `raw` backup of docs/operations.md (pg_dump -n raw, pg_restore) is run for real too.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dagster as dg
import pandas as pd
import psycopg2
import pytest
import sqlalchemy as sa
from psycopg2 import errors, sql

from moovitamix_assets.defs.core.assets import core_assets
from moovitamix_assets.defs.ingestion.api import MoovitamixApiResource
from moovitamix_assets.defs.ingestion.assets import raw_assets
from moovitamix_assets.partitions import utc_today
from moovitamix_assets.warehouse.database import (
    PostgresResource,
    connect_psycopg2,
    dispose_engines,
)
from moovitamix_assets.warehouse.io_manager import PostgresPandasIOManager
from moovitamix_assets_tests.defs.recommendation.publishing import publish, recommendations
from moovitamix_assets_tests.security.pg_tools import (
    admin_execute,
    as_role,
    drop_roles,
    run_least_privilege_script,
    run_program,
    set_password,
)

RECORDS = 60


@dataclass(frozen=True)
class Roles:
    admin_url: str
    platform: str
    serving: str
    platform_url: str
    serving_url: str


@pytest.fixture
def roles(pg_url: str) -> Iterator[Roles]:
    """The script's two roles (unique names per test) on this test's database, with passwords."""
    suffix = uuid.uuid4().hex[:10]
    platform, serving = f"mvx_platform_{suffix}", f"mvx_serving_{suffix}"
    run_least_privilege_script(pg_url, platform, serving)
    passwords = {platform: secrets.token_hex(16), serving: secrets.token_hex(16)}
    for role, password in passwords.items():
        set_password(pg_url, role, password)
    try:
        yield Roles(
            admin_url=pg_url,
            platform=platform,
            serving=serving,
            platform_url=as_role(pg_url, platform, passwords[platform]),
            serving_url=as_role(pg_url, serving, passwords[serving]),
        )
    finally:
        dispose_engines()
        drop_roles(pg_url, platform, serving)


def query(url: str, statement: str, params: tuple = (), *, read_write: bool = False) -> list:
    """Run one statement as the URL's role in its own transaction; return the rows (if any)."""
    conn = connect_psycopg2(url)
    try:
        with conn.cursor() as cur:
            if read_write:
                cur.execute("SET TRANSACTION READ WRITE")
            cur.execute(statement, params or None)
            rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows
    finally:
        conn.close()


def refused(url: str, statement: str, *, read_write: bool = False) -> psycopg2.Error:
    """The error PostgreSQL raises for ``statement`` run as the URL's role."""
    with pytest.raises(psycopg2.Error) as raised:
        query(url, statement, read_write=read_write)
    return raised.value


def materialize_daily(url: str, api_url: str) -> dg.ExecuteInProcessResult:
    postgres = PostgresResource(database_url=url)
    return dg.materialize(
        [*raw_assets, *core_assets],
        resources={
            "moovitamix_api": MoovitamixApiResource(base_url=api_url),
            "postgres": postgres,
            "warehouse_io_manager": PostgresPandasIOManager(database=postgres),
        },
        partition_key=utc_today().isoformat(),
    )


def test_the_roles_have_no_dangerous_attributes(roles: Roles) -> None:
    rows = query(
        roles.admin_url,
        "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, "
        "rolcanlogin FROM pg_roles WHERE rolname IN (%s, %s) ORDER BY rolname",
        (roles.platform, roles.serving),
    )
    assert [r[0] for r in rows] == sorted([roles.platform, roles.serving])
    for _, *dangerous, can_login in rows:
        assert dangerous == [False] * 5
        assert can_login
    owners = dict(
        query(
            roles.admin_url,
            "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace "
            "WHERE nspname IN ('raw', 'core', 'ml')",
        )
    )
    assert owners == {"raw": roles.platform, "core": roles.platform, "ml": roles.platform}


def test_the_platform_role_runs_the_daily_job_and_raw_backs_up_and_restores(
    roles: Roles, api_server, fresh_database: Callable[[], str]
) -> None:
    api = api_server(records=RECORDS, seed=5)
    result = materialize_daily(roles.platform_url, api.base_url)
    assert result.success

    tables = query(
        roles.admin_url,
        "SELECT schemaname, tablename, tableowner FROM pg_tables "
        "WHERE schemaname IN ('raw', 'core') ORDER BY 1, 2",
    )
    assert {(s, t) for s, t, _ in tables} >= {
        ("raw", "users"),
        ("raw", "tracks"),
        ("raw", "listen_history"),
        ("raw", "snapshot_manifest"),
        ("core", "users"),
        ("core", "listen_pairs"),
        ("core", "listen_histories"),
    }
    assert {owner for _, _, owner in tables} == {roles.platform}
    # core.listen_events and core.user_track_interactions are views (docs/data-model.md).
    assert query(
        roles.admin_url,
        "SELECT viewname, viewowner FROM pg_views WHERE schemaname = 'core' ORDER BY 1",
    ) == [("listen_events", roles.platform), ("user_track_interactions", roles.platform)]
    assert query(roles.platform_url, "SELECT count(*) FROM core.users") == [(RECORDS,)]

    # A second run of the same day (the daily job is re-runnable) works as the role too.
    assert materialize_daily(roles.platform_url, api.base_url).success
    assert query(roles.platform_url, "SELECT count(*) FROM raw.users") == [(RECORDS,)]

    # The backup of docs/operations.md: the raw history, dumped by its owner, restored elsewhere.
    dump = run_program(roles.platform_url, "pg_dump", "--format=custom", "--schema=raw")
    restored_url = fresh_database()
    run_program(
        restored_url,
        "pg_restore",
        "--no-owner",
        "--exit-on-error",
        "-d",
        sa.make_url(restored_url).database,
        stdin=dump.stdout,
    )
    count_per_table = (
        "SELECT 'users', snapshot_date, count(*) FROM raw.users GROUP BY 2 UNION ALL "
        "SELECT 'tracks', snapshot_date, count(*) FROM raw.tracks GROUP BY 2 UNION ALL "
        "SELECT 'listen_history', snapshot_date, count(*) FROM raw.listen_history GROUP BY 2 "
        "ORDER BY 1, 2"
    )
    assert query(restored_url, count_per_table) == query(roles.admin_url, count_per_table)
    assert query(restored_url, "SELECT count(*) FROM raw.snapshot_manifest") == [(3,)]


def test_the_platform_role_cannot_leave_its_schemas(roles: Roles) -> None:
    # Another team's data in the same database, which the platform has no grant on.
    admin_execute(roles.admin_url, "CREATE SCHEMA finance")
    admin_execute(roles.admin_url, "CREATE TABLE finance.payroll (name text, salary numeric)")
    admin_execute(roles.admin_url, "CREATE TABLE public.audit (entry text)")
    denied = errors.InsufficientPrivilege

    assert isinstance(refused(roles.platform_url, "SELECT * FROM finance.payroll"), denied)
    assert isinstance(refused(roles.platform_url, "SELECT * FROM public.audit"), denied)
    assert isinstance(refused(roles.platform_url, "CREATE TABLE public.sneaky (x int)"), denied)
    assert isinstance(refused(roles.platform_url, "CREATE SCHEMA sneaky"), denied)
    assert isinstance(refused(roles.platform_url, "CREATE ROLE sneaky"), denied)
    assert isinstance(refused(roles.platform_url, f"ALTER ROLE {roles.platform} SUPERUSER"), denied)
    # CREATE DATABASE cannot run in a transaction block: autocommit.
    conn = connect_psycopg2(roles.platform_url)
    try:
        conn.autocommit = True
        with pytest.raises(denied), conn.cursor() as cur:
            cur.execute("CREATE DATABASE sneaky")
    finally:
        conn.close()

    # What it may do: create, fill and drop its own tables in raw/core/ml, and TEMP tables.
    query(roles.platform_url, "CREATE TABLE ml.scratch (x int)")
    query(roles.platform_url, "INSERT INTO ml.scratch VALUES (1)")
    query(roles.platform_url, "DROP TABLE ml.scratch")
    query(roles.platform_url, "CREATE TEMP TABLE staging ON COMMIT DROP AS SELECT 1 AS x")


def test_a_role_without_grants_cannot_even_connect(roles: Roles) -> None:
    outsider = f"mvx_outsider_{uuid.uuid4().hex[:10]}"
    admin_execute(roles.admin_url, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(outsider)))
    try:
        with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
            connect_psycopg2(as_role(roles.admin_url, outsider, secrets.token_hex(8))).close()
    finally:
        drop_roles(roles.admin_url, outsider)


def publish_as(url: str, recs: pd.DataFrame) -> None:
    engine = sa.create_engine(url)
    try:
        publish(engine, recs)
    finally:
        engine.dispose()


def test_the_serving_role_reads_recommendations_only(roles: Roles) -> None:
    publish_as(roles.platform_url, recommendations())
    query(roles.platform_url, "CREATE TABLE core.users (id bigint)")
    # Before the table existed the script could not grant it; the second run does (idempotent).
    assert isinstance(
        refused(roles.serving_url, "SELECT * FROM ml.user_recommendations"),
        errors.InsufficientPrivilege,
    )
    run_least_privilege_script(roles.admin_url, roles.platform, roles.serving)

    rows = query(roles.serving_url, "SELECT user_id, track_id FROM ml.user_recommendations")
    assert sorted(rows) == [(1, 10), (1, 11), (2, 10)]
    # The next day's rows replace the served table behind the view: the grant survives it.
    publish_as(roles.platform_url, recommendations(2).head(1))
    assert query(roles.serving_url, "SELECT count(*) FROM ml.user_recommendations") == [(1,)]

    # Read-only by default, and without write grants even in a read-write transaction. (A write
    # through the view meets its missing grant before the read-only check.)
    sneaky = "CREATE TEMP TABLE sneaky (x int)"
    assert isinstance(refused(roles.serving_url, sneaky), errors.ReadOnlySqlTransaction)
    for statement in (
        "INSERT INTO ml.user_recommendations (user_id) VALUES (3)",
        "DELETE FROM ml.user_recommendations",
        "INSERT INTO ml.user_recommendations_served (user_id) VALUES (3)",
        "CREATE TABLE ml.sneaky (x int)",
        sneaky,
    ):
        error = refused(roles.serving_url, statement, read_write=True)
        assert isinstance(error, errors.InsufficientPrivilege), statement
    for statement in ("SELECT * FROM core.users", "SELECT * FROM raw.users"):
        assert isinstance(refused(roles.serving_url, statement), errors.InsufficientPrivilege)
