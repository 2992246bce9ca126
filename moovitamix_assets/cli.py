"""`python -m moovitamix_assets.cli run|ui`: the README's one-command demo and the local UI.

Both start what is missing on a fresh machine, with embedded defaults: a real PostgreSQL from pip
(unless MOOVITAMIX_DATABASE_URL is set) holding both the warehouse and Dagster's own instance, and
the bundled API stand-in (unless MOOVITAMIX_API_URL is set). Dagster's home lives in the project's
state folder, so the runs made by `run` show up in the UI started by `ui`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from moovitamix_assets.constants import ENDPOINTS, RAW_SCHEMA, SNAPSHOT_DATE_COLUMN
from moovitamix_assets.partitions import utc_today
from moovitamix_assets.resources.database import PostgresResource, quote_ident
from moovitamix_assets.resources.embedded_postgres import state_dir as resolve_state_dir

DAGSTER_STORAGE_ENV = "MOOVITAMIX_DAGSTER_STORAGE_URL"
DEFAULT_UI_HOST = "127.0.0.1"
# The dagster command of this interpreter's environment: `make run` calls .venv/bin/python without
# activating the virtualenv, so `dagster` is not on PATH.
DAGSTER = str(Path(sys.executable).with_name("dagster"))

LOCAL_DAGSTER_YAML = f"""\
# Written by `python -m moovitamix_assets.cli`: Dagster's runs, event logs and schedules live in
# PostgreSQL (dagster-postgres), the same server as the warehouse, in a database of their own.
storage:
  postgres:
    postgres_url:
      env: {DAGSTER_STORAGE_ENV}
telemetry:
  enabled: false
"""


def prepare_environment(state_dir: Path) -> dict[str, str]:
    """Start or reuse PostgreSQL and Dagster's home; return the environment for Dagster processes.

    Args:
        state_dir: The project's state folder.

    Returns:
        A copy of ``os.environ`` with ``DAGSTER_HOME`` and the storage URL set.
    """
    env = dict(os.environ)
    env.setdefault("MOOVITAMIX_STATE_DIR", str(state_dir))
    warehouse = PostgresResource(
        database_url=os.environ.get("MOOVITAMIX_DATABASE_URL"), state_dir=str(state_dir)
    )
    if DAGSTER_STORAGE_ENV not in env:
        storage = PostgresResource(
            database_url=str(
                sa.make_url(warehouse.url()).set(database="dagster").render_as_string(False)
            ),
            state_dir=str(state_dir),
        )
        env[DAGSTER_STORAGE_ENV] = storage.url()  # creates the database when missing
    if "DAGSTER_HOME" not in env:
        home = state_dir / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text(LOCAL_DAGSTER_YAML)
        env["DAGSTER_HOME"] = str(home)
    return env


@contextmanager
def api_stand_in(env: dict[str, str], records: int, seed: int) -> Iterator[None]:
    """Run the bundled API stand-in for the duration, unless MOOVITAMIX_API_URL points elsewhere."""
    if "MOOVITAMIX_API_URL" in env:
        yield
        return
    # The stand-in (and its web stack, the `demo` extra) only when it is started.
    from moovitamix_api.server import run_subprocess

    with run_subprocess(["--records", str(records), "--seed", str(seed)], env=env) as api:
        env["MOOVITAMIX_API_URL"] = api.base_url
        print(f"API stand-in ({records:,} records per endpoint) at {api.base_url}")
        yield


def summarize(partition: str, state_dir: Path) -> str:
    """A short table of what the platform holds after the run: every table, its rows, rejects."""
    engine = PostgresResource(
        database_url=os.environ.get("MOOVITAMIX_DATABASE_URL"), state_dir=str(state_dir)
    ).engine()
    lines = [
        f"Stored for {partition} (UTC):",
        f"  {'table':<36}{'rows':>10}{'api total':>11}{'rejects':>9}",
    ]
    with engine.connect() as conn:
        manifest = {
            row.endpoint: row
            for row in conn.execute(
                sa.text(
                    "SELECT endpoint, api_total, rows_rejected "
                    f"FROM {RAW_SCHEMA}.snapshot_manifest WHERE {SNAPSHOT_DATE_COLUMN} = :d"
                ),
                {"d": partition},
            )
        }
        tables = conn.execute(
            sa.text(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema IN ('raw', 'core', 'ml') "
                "AND table_type IN ('BASE TABLE', 'VIEW') "
                "ORDER BY array_position(ARRAY['raw', 'core', 'ml'], table_schema::text), "
                "table_name"
            )
        ).all()
        for schema, table in tables:
            qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
            if schema == RAW_SCHEMA and table in ENDPOINTS:
                rows = conn.execute(
                    sa.text(f"SELECT count(*) FROM {qualified} WHERE {SNAPSHOT_DATE_COLUMN} = :d"),
                    {"d": partition},
                ).scalar_one()
                m = manifest.get(table)
                total, rejects = (m.api_total, m.rows_rejected) if m else ("?", "?")
                lines.append(f"  {schema + '.' + table:<36}{rows:>10}{total:>11}{rejects:>9}")
            else:
                rows = conn.execute(sa.text(f"SELECT count(*) FROM {qualified}")).scalar_one()
                lines.append(f"  {schema + '.' + table:<36}{rows:>10}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m moovitamix_assets.cli``."""
    parser = argparse.ArgumentParser(prog="python -m moovitamix_assets.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize every asset for one day and print a summary")
    run.add_argument("--partition", default=None, help="UTC day, YYYY-MM-DD (default: today)")
    ui = sub.add_parser("ui", help="start `dagster dev` on 127.0.0.1 with the same defaults")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument(
        "--host",
        default=DEFAULT_UI_HOST,
        help="address the UI binds to (default: loopback only; 0.0.0.0 exposes it to the network)",
    )
    for p in (run, ui):
        p.add_argument("--records", type=int, default=1000, help="stand-in records per endpoint")
        p.add_argument("--seed", type=int, default=42, help="stand-in seed")
    return parser


def dagster_dev_command(host: str = DEFAULT_UI_HOST, port: int = 3000) -> list[str]:
    """The ``dagster dev`` command line that ``ui`` runs: the UI has no login, so loopback only
    unless ``--host`` says otherwise."""
    return [DAGSTER, "dev", "-m", "moovitamix_assets.definitions", "-h", host, "-p", str(port)]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    state_dir = resolve_state_dir()
    env = prepare_environment(state_dir)
    with api_stand_in(env, args.records, args.seed):
        if args.command == "ui":
            return subprocess.call(dagster_dev_command(args.host, args.port), env=env)
        partition = args.partition or utc_today().isoformat()
        cmd = [
            DAGSTER,
            "asset",
            "materialize",
            "-m",
            "moovitamix_assets.definitions",
            "--select",
            "*",
            "--partition",
            partition,
        ]
        started = time.monotonic()
        code = subprocess.call(cmd, env=env)
        if code != 0:
            print(f"dagster asset materialize failed (exit {code})", file=sys.stderr)
            return code
        print(f"\nMaterialized every asset for {partition} in {time.monotonic() - started:.1f} s.")
        print(summarize(partition, state_dir))
        print(f"\nDagster home: {env['DAGSTER_HOME']}  (see the runs with `make ui`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
