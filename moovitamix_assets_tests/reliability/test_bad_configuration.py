"""Bad configuration fails the run before any work: no step starts, no page is requested, no table
is written, and the message names the setting (database URLs with the password masked).

Resources check themselves in ``setup_for_execution``, which Dagster runs before the first step.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pydantic
import pytest
import sqlalchemy as sa
from psycopg2 import sql

from moovitamix_assets.warehouse.database import connect_psycopg2
from moovitamix_assets_tests.reliability.harness import (
    assert_same_contents,
    daily_resources,
    execute,
    failure_text,
    fault_api,
    run_day,
    scalar,
    step_starts,
    table_contents,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.http]

SECRET = f"pw-{uuid.uuid4().hex}"
API_URL = dg.EnvVar("MOOVITAMIX_API_URL")
DATABASE_URL = dg.EnvVar("MOOVITAMIX_DATABASE_URL")


def assert_nothing_done(result, api, baseline, warehouse: str) -> str:
    """The run failed before any step, asked the API for no page, and wrote nothing."""
    assert not result.success
    assert step_starts(result) == []
    if api is not None:
        assert {e: s["requests"] for e, s in api.stats().items()} == {
            "users": 0, "tracks": 0, "listen_history": 0,
        }  # fmt: skip
    assert_same_contents(baseline.contents, table_contents(warehouse))
    message = failure_text(result)
    for event in result.all_events:
        assert SECRET not in str(event)
    return message


def test_unreachable_api_url(baseline, warehouse, monkeypatch):
    monkeypatch.setenv("MOOVITAMIX_API_URL", "http://127.0.0.1:1")
    result = run_day(daily_resources(API_URL, warehouse), baseline.day)
    message = assert_nothing_done(result, None, baseline, warehouse)
    assert "http://127.0.0.1:1 (from MOOVITAMIX_API_URL)" in message
    assert "cannot connect" in message


def test_api_url_of_another_service(baseline, warehouse, standin, monkeypatch):
    api = standin()
    monkeypatch.setenv("MOOVITAMIX_API_URL", f"{api.base_url}/v2")
    result = run_day(daily_resources(API_URL, warehouse), baseline.day)
    message = assert_nothing_done(result, api, baseline, warehouse)
    assert f"API at {api.base_url}/v2 (from MOOVITAMIX_API_URL) answered HTTP 404" in message


def test_page_size_above_the_api_limit(baseline, warehouse, standin, monkeypatch):
    api = standin()
    with pytest.raises(pydantic.ValidationError, match="page_size must be between 1 and 100"):
        fault_api(api.base_url, page_size=101)
    # From the environment the value is only known at run time: refused at setup.
    monkeypatch.setenv("MOOVITAMIX_API_PAGE_SIZE", "101")
    resources = daily_resources(
        api.base_url, warehouse, page_size=dg.EnvVar.int("MOOVITAMIX_API_PAGE_SIZE")
    )
    result = run_day(resources, baseline.day)
    message = assert_nothing_done(result, api, baseline, warehouse)
    assert "page_size must be between 1 and 100, got 101" in message


@pytest.fixture
def login_role(postgres_base_url: str) -> Iterator[str]:
    """A role without CREATEDB that must authenticate with ``SECRET``, also on the embedded
    server (which trusts local connections: a pg_hba.conf rule is prepended for this role)."""
    role = f"fault_{uuid.uuid4().hex[:12]}"
    execute(
        postgres_base_url,
        sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(SECRET)
        ),
    )
    hba = Path(scalar(postgres_base_url, "SHOW hba_file"))
    original = hba.read_text() if os.access(hba, os.W_OK) else None
    if original is not None:
        rules = f"local all {role} scram-sha-256\nhost all {role} all scram-sha-256\n"
        hba.write_text(rules + original)
        execute(postgres_base_url, "SELECT pg_reload_conf()")
    try:
        yield role
    finally:
        if original is not None:
            hba.write_text(original)
            execute(postgres_base_url, "SELECT pg_reload_conf()")
        execute(
            postgres_base_url,
            sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)),
            sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)),
        )


def refuses(url: sa.URL) -> bool:
    try:
        connect_psycopg2(url).close()
    except psycopg2.OperationalError:
        return True
    return False


def test_wrong_database_password(baseline, warehouse, standin, login_role, monkeypatch):
    api = standin()
    role_url = sa.make_url(warehouse).set(username=login_role, password=SECRET)
    wrong = role_url.set(password=SECRET + "-not")
    # The configuration reload is asynchronous: wait until a password is really required.
    wait_until(lambda: refuses(wrong), "password authentication to be required")
    connect_psycopg2(role_url).close()  # the right password works
    monkeypatch.setenv("MOOVITAMIX_DATABASE_URL", wrong.render_as_string(hide_password=False))
    result = run_day(daily_resources(api.base_url, DATABASE_URL), baseline.day)
    message = assert_nothing_done(result, api, baseline, warehouse)
    assert "password authentication failed" in message
    assert "database_url (MOOVITAMIX_DATABASE_URL)" in message
    assert f"postgresql+psycopg2://{login_role}:***@" in message


def test_database_that_cannot_be_created(baseline, warehouse, standin, login_role, monkeypatch):
    api = standin()
    name = f"never_{uuid.uuid4().hex[:12]}"
    url = sa.make_url(warehouse).set(username=login_role, password=SECRET, database=name)
    monkeypatch.setenv("MOOVITAMIX_DATABASE_URL", url.render_as_string(hide_password=False))
    result = run_day(daily_resources(api.base_url, DATABASE_URL), baseline.day)
    message = assert_nothing_done(result, api, baseline, warehouse)
    assert f"cannot create database {name!r} named by database_url (MOOVITAMIX_DATABASE_URL)" in (
        message
    )
    assert "permission denied" in message and ":***@" in message
    assert not scalar(warehouse, "SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
