"""Fixtures of the fault suite: one arranged first day, cloned into a fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from psycopg2 import sql

from moovitamix_api.config import StandInConfig
from moovitamix_api.server import StandInServer
from moovitamix_assets.partitions import utc_today
from moovitamix_assets.warehouse.database import dispose_engines
from moovitamix_assets_tests.reliability.harness import (
    RECORDS,
    SEED,
    VOLATILE_COLUMNS,
    Contents,
    daily_resources,
    execute,
    run_day,
    table_contents,
)


@dataclass(frozen=True)
class Baseline:
    """The first successful day, kept as a template database and as its full contents."""

    day: str
    template: str
    contents: Contents
    stable_contents: Contents  # without VOLATILE_COLUMNS, to compare with a later good run


def _database_url(base_url: str, name: str) -> str:
    return sa.make_url(base_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def baseline(postgres_base_url: str) -> Iterator[Baseline]:
    """Raw and core of today, materialized once from a clean stand-in into a template database."""
    day = utc_today().isoformat()
    template = f"fault_template_{uuid.uuid4().hex[:12]}"
    execute(postgres_base_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
    url = _database_url(postgres_base_url, template)
    server = StandInServer(StandInConfig.build(records=RECORDS, seed=SEED, day=day)).start()
    try:
        result = run_day(daily_resources(server.base_url, url), day)
        assert result.success, "the first day must succeed before faults are injected"
    finally:
        server.stop()
    contents = table_contents(url)
    stable = table_contents(url, ignore=VOLATILE_COLUMNS)
    # CREATE DATABASE ... TEMPLATE needs the template without connections.
    dispose_engines()
    try:
        yield Baseline(day=day, template=template, contents=contents, stable_contents=stable)
    finally:
        dispose_engines()
        execute(
            postgres_base_url,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(template)),
        )


@pytest.fixture
def warehouse(baseline: Baseline, postgres_base_url: str) -> Iterator[str]:
    """URL of a fresh copy of the first day's database, dropped after the test."""
    name = f"fault_{uuid.uuid4().hex[:12]}"
    execute(
        postgres_base_url,
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(baseline.template)
        ),
    )
    try:
        yield _database_url(postgres_base_url, name)
    finally:
        dispose_engines()
        execute(
            postgres_base_url,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
        )


@pytest.fixture
def standin(api_server: Callable[..., StandInServer], baseline: Baseline) -> Callable[..., Any]:
    """The first day's stand-in again (same seed, records, day), with faults: ``standin(**f)``."""

    def start(**faults: Any) -> StandInServer:
        return api_server(records=RECORDS, seed=SEED, day=baseline.day, **faults)

    return start
