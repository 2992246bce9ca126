"""Credentials come from the environment and never reach logs, events, metadata, errors or files.

A real daily run (raw, core and their checks) against the real test server, through a role whose
password is in the database URL: every log record, every event of the run, every metadata value
and every file Dagster wrote is searched for the password. (The embedded server trusts its unix
socket, so the password is not needed to connect there, but it is in the URL every component
sees, which is what could leak; against MOOVITAMIX_TEST_DATABASE_URL it is really checked.)
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from psycopg2 import sql

from moovitamix_assets.definitions import build_resources
from moovitamix_assets.defs.core.assets import core_assets
from moovitamix_assets.defs.core.checks import core_checks
from moovitamix_assets.defs.ingestion.api import MoovitamixApiResource
from moovitamix_assets.defs.ingestion.assets import RAW_KEYS, raw_assets
from moovitamix_assets.defs.ingestion.checks import raw_checks
from moovitamix_assets.partitions import utc_today
from moovitamix_assets.warehouse.database import MASK, PostgresResource, dispose_engines
from moovitamix_assets.warehouse.io_manager import PostgresPandasIOManager
from moovitamix_assets_tests.security.pg_tools import admin_execute, as_role, drop_roles


@dataclass(frozen=True)
class SecretRole:
    name: str
    password: str
    url: str


@pytest.fixture
def secret_role(pg_url: str) -> Iterator[SecretRole]:
    """A login role with a random password, allowed to build the platform's schemas."""
    name = f"mvx_secret_{uuid.uuid4().hex[:10]}"
    password = secrets.token_hex(20)
    database = sql.Identifier(sa.make_url(pg_url).database)
    admin_execute(
        pg_url,
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(password)
        ),
    )
    admin_execute(
        pg_url,
        sql.SQL("GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {} TO {}").format(
            database, sql.Identifier(name)
        ),
    )
    try:
        yield SecretRole(name, password, as_role(pg_url, name, password))
    finally:
        dispose_engines()
        drop_roles(pg_url, name)


def warehouse_resources(database_url: str, api_url: str) -> dict[str, object]:
    postgres = PostgresResource(database_url=database_url)
    return {
        "moovitamix_api": MoovitamixApiResource(base_url=api_url),
        "postgres": postgres,
        "warehouse_io_manager": PostgresPandasIOManager(database=postgres),
    }


def everything_dagster_kept(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, home: Path
) -> dict[str, str]:
    """Every place a secret could land, as text: events, stored logs, the run, instance files."""
    places = {
        "result events": "\n".join(dg.serialize_value(e) for e in result.all_events),
        "stored event log": "\n".join(
            dg.serialize_value(entry) for entry in instance.all_logs(result.run_id)
        ),
        "run record": dg.serialize_value(instance.get_run_by_id(result.run_id)),
    }
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        # SQLite event/run storage and captured compute logs (stdout/stderr of the steps).
        places[f"file {path.relative_to(home)}"] = path.read_bytes().decode("latin-1")
    return places


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''} {r.__dict__!r}"
        for r in caplog.records
    )


def assert_absent(secret: str, places: dict[str, str]) -> None:
    leaks = [name for name, text in places.items() if secret in text]
    assert not leaks, f"the password appears in: {leaks}"


def test_a_daily_run_leaks_the_password_nowhere(
    secret_role: SecretRole,
    api_server,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    api = api_server(records=80, seed=11)
    home = tmp_path / "dagster_home"
    home.mkdir()
    caplog.set_level(logging.DEBUG)
    with dg.DagsterInstance.local_temp(tempdir=str(home)) as instance:
        result = dg.materialize(
            [*raw_assets, *core_assets, *raw_checks, *core_checks],
            resources=warehouse_resources(secret_role.url, api.base_url),
            partition_key=utc_today().isoformat(),
            instance=instance,
        )
        assert result.success
        materializations = result.get_asset_materialization_events()
        assert len(materializations) == 7
        metadata = [
            f"{key}={value!r}"
            for event in materializations
            for key, value in event.materialization.metadata.items()
        ]
        assert result.get_asset_check_evaluations()
        places = everything_dagster_kept(instance, result, home)
    out, err = capfd.readouterr()
    places |= {"metadata": "\n".join(metadata), "python logs": log_text(caplog)}
    places |= {"stdout": out, "stderr": err}

    assert_absent(secret_role.password, places)
    # The URL is shown, masked: proof the search above looked where the URL goes.
    masked = f"{secret_role.name}:{MASK}@"
    assert masked in places["stored event log"]
    assert masked in PostgresResource(database_url=secret_role.url).masked_url()
    assert secret_role.password not in PostgresResource(database_url=secret_role.url).masked_url()


def test_a_failed_connection_leaks_the_password_nowhere(
    api_server,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    password = secrets.token_hex(20)
    # Nothing listens on port 1: the run fails on connecting, with the URL in hand.
    url = f"postgresql://moovitamix:{password}@127.0.0.1:1/warehouse"
    api = api_server(records=20)
    home = tmp_path / "dagster_home"
    home.mkdir()
    caplog.set_level(logging.DEBUG)
    with dg.DagsterInstance.local_temp(tempdir=str(home)) as instance:
        result = dg.materialize(
            raw_assets,
            selection=[RAW_KEYS["users"]],
            resources=warehouse_resources(url, api.base_url),
            partition_key=utc_today().isoformat(),
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        places = everything_dagster_kept(instance, result, home)
    out, err = capfd.readouterr()
    places |= {"python logs": log_text(caplog), "stdout": out, "stderr": err}

    assert_absent(password, places)
    # The failure (at resource setup or in the step) names the cause and the masked URL.
    events = places["stored event log"]
    assert "cannot connect to the database" in events
    assert f"moovitamix:{MASK}@127.0.0.1:1/warehouse" in events


def test_definitions_wire_secrets_as_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    password = secrets.token_hex(20)
    monkeypatch.setenv("MOOVITAMIX_DATABASE_URL", f"postgresql://u:{password}@db.example/w")
    monkeypatch.setenv("MOOVITAMIX_API_URL", "http://127.0.0.1:8000")
    monkeypatch.setenv("MOOVITAMIX_ALERT_WEBHOOK_URL", f"https://hooks.example/{password}")

    resources = build_resources()

    configured = {
        ("postgres", "database_url"): "MOOVITAMIX_DATABASE_URL",
        ("moovitamix_api", "base_url"): "MOOVITAMIX_API_URL",
        ("alert_notifier", "webhook_url"): "MOOVITAMIX_ALERT_WEBHOOK_URL",
    }
    for (key, field), variable in configured.items():
        value = getattr(resources[key], field)
        # The definitions hold the variable's name; Dagster reads its value only at run time.
        assert isinstance(value, dg.EnvVar), (key, field)
        assert value.env_var_name == variable
    # The IO manager shares the postgres resource (and so its EnvVar), not a resolved copy.
    shared = resources["warehouse_io_manager"].database.database_url
    assert isinstance(shared, dg.EnvVar) and shared.env_var_name == "MOOVITAMIX_DATABASE_URL"
    assert password not in repr(resources)


def test_without_the_variables_nothing_secret_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("MOOVITAMIX_DATABASE_URL", "MOOVITAMIX_API_URL", "MOOVITAMIX_ALERT_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    resources = build_resources()
    # The embedded server and the local stand-in: no credential, and no EnvVar naming an unset
    # variable (which would fail every run).
    assert resources["postgres"].database_url is None
    assert resources["alert_notifier"].webhook_url is None
    assert not isinstance(resources["moovitamix_api"].base_url, dg.EnvVar)
