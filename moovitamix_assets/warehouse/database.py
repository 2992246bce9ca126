"""The warehouse connection: a PostgreSQL URL or the embedded server, checked, masked, pooled."""

import os
import re
import threading
from contextlib import closing, suppress
from typing import Final

import dagster as dg
import psycopg2
import sqlalchemy as sa
from psycopg2 import errorcodes, sql
from pydantic import Field
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError

from moovitamix_assets.warehouse.embedded_postgres import start_embedded_postgres

DATABASE_URL_ENV: Final = "MOOVITAMIX_DATABASE_URL"
MASK: Final = "***"
# Without it libpq waits for the kernel's TCP timeout (minutes) on a blackholed host.
CONNECT_TIMEOUT_SECONDS: Final = 10
_DRIVERNAMES: Final = {"postgresql", "postgres", "postgresql+psycopg2", "postgres+psycopg2"}
# Lower-case identifiers: no quoting surprises, no case folding, at most 63 bytes.
_IDENTIFIER_RE: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# One engine per URL and process; its creation first ensures the database exists.
_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.Lock()


class DatabaseConfigError(ValueError):
    """The configured database URL is malformed or names an unsupported driver."""


class DatabaseConnectionError(RuntimeError):
    """The database cannot be reached, refuses the credentials, or cannot be created."""


def validate_identifier(name: str, kind: str = "identifier") -> str:
    """``name`` if it is ``[a-z_][a-z0-9_]*`` of at most 63 characters, else ValueError."""
    if not isinstance(name, str) or not _IDENTIFIER_RE.fullmatch(name):
        raise ValueError(
            f"invalid {kind} {name!r}: use lower-case letters, digits and underscores, "
            "starting with a letter or underscore, at most 63 characters"
        )
    return name


def quote_ident(name: str, kind: str = "identifier") -> str:
    """Validate ``name`` (see :func:`validate_identifier`) and return it double-quoted."""
    return f'"{validate_identifier(name, kind)}"'


def create_schema_sql(schema: str) -> str:
    """SQL that creates ``schema`` only when missing: ``CREATE SCHEMA IF NOT EXISTS`` alone checks
    the CREATE privilege first, failing the least-privilege role even when the schema exists."""
    name = validate_identifier(schema, "schema")
    return (
        f"DO $$BEGIN IF to_regnamespace('{name}') IS NULL THEN "
        f'CREATE SCHEMA IF NOT EXISTS "{name}"; END IF; END$$'
    )


def mask_url(url: str | URL) -> str:
    """Render a URL with its password (in the authority or the query string) replaced by ``***``."""
    try:
        parsed = sa.make_url(url)
    except ArgumentError:
        return "<unparseable database URL>"
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": MASK})
    return parsed.render_as_string(hide_password=True)


def normalize_database_url(url: str | URL, setting: str = DATABASE_URL_ENV) -> URL:
    """Parse a PostgreSQL URL and pin the psycopg2 driver (SQLAlchemy 2.1 maps ``postgresql://``
    to psycopg 3, not installed, and rejects ``postgres://``); errors name ``setting``, masked."""
    try:
        parsed = sa.make_url(url)
    except ArgumentError:
        # The text may hold a password: never echo it.
        raise DatabaseConfigError(
            f"{setting} is not a valid database URL; expected "
            "postgresql+psycopg2://user:password@host:port/database"
        ) from None
    if parsed.drivername not in _DRIVERNAMES:
        raise DatabaseConfigError(
            f"{setting} uses the driver {parsed.drivername!r} ({mask_url(parsed)}); only "
            "PostgreSQL through psycopg2 is supported: postgresql:// or postgresql+psycopg2://"
        )
    if not parsed.database:
        raise DatabaseConfigError(f"{setting} must name a database ({mask_url(parsed)})")
    return parsed.set(drivername="postgresql+psycopg2")


def connect_psycopg2(url: str | URL) -> psycopg2.extensions.connection:
    """A psycopg2 connection (the caller closes it) from a SQLAlchemy URL, its query included."""
    url = sa.make_url(url)
    args = url.translate_connect_args(username="user", database="dbname")
    return psycopg2.connect(**{"connect_timeout": CONNECT_TIMEOUT_SECONDS, **args, **url.query})


def ensure_database(url: URL, setting: str) -> None:
    """Create the URL's database when the server says it does not exist (the target is tried
    first: the usual case needs no rights on ``postgres``); DatabaseConnectionError, masked."""
    what = "cannot connect to the database"
    try:
        try:
            connect_psycopg2(url).close()
            return
        except psycopg2.OperationalError as exc:
            if f'database "{url.database}" does not exist' not in str(exc):
                raise
        what = f"database {url.database!r} does not exist and cannot be created"
        with closing(connect_psycopg2(url.set(database="postgres"))) as conn:
            conn.autocommit = True  # CREATE DATABASE refuses to run in a transaction block
            what = f"cannot create database {url.database!r} named by {setting}"
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
    except psycopg2.Error as exc:
        # Another process may have created it between our two connections.
        if exc.pgcode not in (errorcodes.DUPLICATE_DATABASE, errorcodes.UNIQUE_VIOLATION):
            detail = " ".join(str(exc).split()).replace(str(url.password or MASK), MASK)
            message = f"{what} of {setting} ({mask_url(url)}): {detail}"
            raise DatabaseConnectionError(message) from None


class PostgresResource(dg.ConfigurableResource):
    """The PostgreSQL warehouse: an external server from a URL, or the embedded server."""

    database_url: str | None = Field(
        default=None,
        description=(
            f"PostgreSQL URL of the warehouse, normally dagster.EnvVar('{DATABASE_URL_ENV}'). "
            f"None: ${DATABASE_URL_ENV} at run time if set, else the embedded PostgreSQL of the "
            "state folder. A missing database is created."
        ),
    )
    state_dir: str | None = Field(
        default=None,
        description="State folder of the embedded server (None: $MOOVITAMIX_STATE_DIR at run "
        "time, else <repo root>/.moovitamix).",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Connect before any step: a wrong password fails the run before the API is read."""
        self.engine()

    def _configured(self) -> tuple[str, str]:
        """The URL (the embedded server's unless one is set) and the setting it came from."""
        if self.database_url:
            return self.database_url, f"database_url ({DATABASE_URL_ENV})"
        if os.environ.get(DATABASE_URL_ENV):
            return os.environ[DATABASE_URL_ENV], DATABASE_URL_ENV
        return start_embedded_postgres(self.state_dir).url(), "the embedded PostgreSQL server"

    def engine(self) -> Engine:
        """A pooled engine, one per URL and process, its database created when missing;
        pre-ping, as the embedded server may have restarted."""
        raw, setting = self._configured()
        url = normalize_database_url(raw, setting)
        key = (os.getpid(), url.render_as_string(hide_password=False))
        with _lock:
            if key not in _engines:
                ensure_database(url, setting)
                connect_args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
                _engines[key] = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
            return _engines[key]

    def url(self) -> str:
        """The warehouse URL with its password: for connecting only, never for logs."""
        return self.engine().url.render_as_string(hide_password=False)

    def masked_url(self) -> str:
        """The warehouse URL with the password replaced by ``***``, for logs and metadata."""
        raw, setting = self._configured()
        with suppress(DatabaseConfigError):  # shown as configured when it is not a valid URL
            raw = normalize_database_url(raw, setting)
        return mask_url(raw)


def dispose_engines() -> None:
    """Close every pooled connection of this process (tests call it before dropping a database)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
