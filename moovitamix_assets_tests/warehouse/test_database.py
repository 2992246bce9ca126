"""PostgresResource: URL normalisation, masking, database creation, password-free errors."""

import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy as sa
from psycopg2 import sql

from moovitamix_assets.warehouse.database import (
    DATABASE_URL_ENV,
    DatabaseConfigError,
    DatabaseConnectionError,
    PostgresResource,
    connect_psycopg2,
    dispose_engines,
    mask_url,
    normalize_database_url,
    quote_ident,
    validate_identifier,
)

SECRET = "Sup3r-Secret-Pw"


def _admin(base_url: str, statement: sql.Composable) -> None:
    conn = connect_psycopg2(base_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def _assert_no_secret(exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    assert SECRET not in str(exc) and SECRET not in repr(exc)
    # The driver's exception is not chained: its traceback cannot leak anything either.
    assert exc.__cause__ is None and exc.__suppress_context__
    assert all(SECRET not in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://u:pw@db.example:5432/warehouse",
        "postgres://u:pw@db.example:5432/warehouse",
        "postgresql+psycopg2://u:pw@db.example:5432/warehouse",
    ],
)
def test_urls_are_pinned_to_psycopg2(raw: str) -> None:
    url = normalize_database_url(raw)
    assert url.drivername == "postgresql+psycopg2"
    assert (url.host, url.port, url.database, url.password) == (
        "db.example",
        5432,
        "warehouse",
        "pw",
    )
    # SQLAlchemy picks the psycopg2 dialect (bare postgresql:// would load psycopg 3).
    assert sa.create_engine(url).dialect.driver == "psycopg2"


@pytest.mark.parametrize(
    "raw",
    [
        f"mysql+pymysql://u:{SECRET}@db.example/warehouse",
        f"postgresql+psycopg://u:{SECRET}@db.example/warehouse",
        f"postgresql://u:{SECRET}@db.example:5432",
        f"not a url {SECRET}",
    ],
)
def test_bad_urls_are_refused_without_echoing_the_password(raw: str) -> None:
    with pytest.raises(DatabaseConfigError) as raised:
        normalize_database_url(raw)
    assert DATABASE_URL_ENV in str(raised.value)
    assert SECRET not in str(raised.value)


def test_mask_url_hides_passwords_in_authority_and_query() -> None:
    masked = mask_url(
        f"postgresql+psycopg2://u:{SECRET}@h:5432/db?password={SECRET}&sslmode=require"
    )
    assert SECRET not in masked
    assert masked.startswith("postgresql+psycopg2://u:***@h:5432/db")
    assert "sslmode=require" in masked
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_resource_masked_url_needs_no_connection() -> None:
    resource = PostgresResource(database_url=f"postgresql://me:{SECRET}@127.0.0.1:1/warehouse")
    assert resource.masked_url() == "postgresql+psycopg2://me:***@127.0.0.1:1/warehouse"


@pytest.mark.parametrize("name", ["users", "_x1", "listen_history", "a" * 63])
def test_valid_identifiers(name: str) -> None:
    assert validate_identifier(name) == name
    assert quote_ident(name) == f'"{name}"'


@pytest.mark.parametrize("name", ["", "Users", "1abc", "a-b", 'x"; DROP TABLE y; --', "a" * 64])
def test_invalid_identifiers_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid table"):
        quote_ident(name, "table")


def test_missing_database_is_created_once(postgres_base_url: str) -> None:
    name = f"auto_{uuid.uuid4().hex}"
    url = sa.make_url(postgres_base_url).set(database=name)
    resource = PostgresResource(database_url=url.render_as_string(hide_password=False))
    try:
        assert sa.make_url(resource.url()).database == name
        engine = resource.engine()
        assert resource.engine() is engine
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar() == name
        # A second resolution finds it (no error on an existing database).
        assert (
            sa.make_url(
                PostgresResource(
                    database_url=str(
                        url.set(drivername="postgresql").render_as_string(hide_password=False)
                    )
                ).url()
            ).database
            == name
        )
    finally:
        dispose_engines()
        _admin(
            postgres_base_url,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
        )


def test_env_var_is_read_at_run_time(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    resource = PostgresResource()
    monkeypatch.setenv(DATABASE_URL_ENV, pg_url.replace("postgresql+psycopg2://", "postgresql://"))
    assert resource.url() == pg_url


@pytest.fixture
def role_without_createdb(postgres_base_url: str) -> Iterator[str]:
    role = f"nocreate_{uuid.uuid4().hex[:12]}"
    _admin(
        postgres_base_url,
        sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(SECRET)
        ),
    )
    yield role
    _admin(postgres_base_url, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_database_that_cannot_be_created_is_a_clear_masked_error(
    postgres_base_url: str,
    role_without_createdb: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = sa.make_url(postgres_base_url).set(
        username=role_without_createdb, password=SECRET, database="never_created_db"
    )
    monkeypatch.setenv(DATABASE_URL_ENV, url.render_as_string(hide_password=False))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DatabaseConnectionError) as raised:
        PostgresResource().url()
    message = str(raised.value)
    assert "never_created_db" in message and DATABASE_URL_ENV in message
    assert "permission denied" in message and "***" in message
    _assert_no_secret(raised.value, caplog)


@pytest.fixture
def password_only_role(postgres_base_url: str, pg_url: str) -> Iterator[str]:
    """A role that must authenticate with a password, also on the embedded server (which trusts
    local connections by default: a pg_hba.conf rule is prepended for this role only)."""
    role = f"pw_{uuid.uuid4().hex[:12]}"
    _admin(
        postgres_base_url,
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(SECRET)
        ),
    )
    conn = connect_psycopg2(postgres_base_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SHOW hba_file")
        hba = Path(cur.fetchone()[0])
    original = hba.read_text() if os.access(hba, os.W_OK) else None
    if original is not None:
        rules = f"local all {role} scram-sha-256\nhost all {role} all scram-sha-256\n"
        hba.write_text(rules + original)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_reload_conf()")
    try:
        yield role
    finally:
        if original is not None:
            hba.write_text(original)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_reload_conf()")
        conn.close()
        _admin(postgres_base_url, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_wrong_password_is_a_clear_masked_error(
    pg_url: str, password_only_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    right = sa.make_url(pg_url).set(username=password_only_role, password=SECRET)
    wrong = right.set(password=SECRET + "-wrong")
    # The configuration reload is asynchronous: wait until the right password is required.
    deadline = time.monotonic() + 10
    while True:
        try:
            connect_psycopg2(right.set(password="not-it")).close()
        except psycopg2.OperationalError:
            break
        assert time.monotonic() < deadline, "password authentication never became required"
        time.sleep(0.1)
    connect_psycopg2(right).close()  # the role itself works

    caplog.set_level(logging.DEBUG)
    resource = PostgresResource(database_url=wrong.render_as_string(hide_password=False))
    with pytest.raises(DatabaseConnectionError) as raised:
        resource.url()
    message = str(raised.value)
    assert "password authentication failed" in message
    assert DATABASE_URL_ENV in message and "***" in message
    _assert_no_secret(raised.value, caplog)
    assert SECRET not in resource.masked_url()


def test_unreachable_server_is_a_clear_masked_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    resource = PostgresResource(database_url=f"postgresql://me:{SECRET}@127.0.0.1:1/warehouse")
    with pytest.raises(DatabaseConnectionError) as raised:
        resource.engine()
    message = str(raised.value)
    assert "cannot connect" in message and "127.0.0.1" in message
    assert "postgresql+psycopg2://me:***@127.0.0.1:1/warehouse" in message
    _assert_no_secret(raised.value, caplog)
