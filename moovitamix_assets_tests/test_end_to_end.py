"""The README's terminal form, for real.

`dagster asset materialize` in a subprocess, against the API stand-in on loopback, a real
PostgreSQL, and Dagster's own instance stored in PostgreSQL through `deploy/dagster.yaml`.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from moovitamix_assets.cli import DAGSTER
from moovitamix_assets.partitions import utc_today

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.e2e, pytest.mark.http]


def deployment_env(dagster_home: Path, storage_url: str) -> dict[str, str]:
    """DAGSTER_HOME with deploy/dagster.yaml and the DAGSTER_PG_* variables it reads."""
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    url = sa.make_url(storage_url)
    socket_dir = url.query.get("host")
    env = {
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_USERNAME": url.username or "",
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_HOST": "" if socket_dir else (url.host or ""),
        "DAGSTER_PG_PORT": str(url.query.get("port") or url.port or 5432),
        "DAGSTER_PG_DB": url.database or "",
    }
    if socket_dir:
        # The embedded server listens on a unix socket only: libpq takes its folder from PGHOST
        # when the URL names no host.
        env["PGHOST"] = str(socket_dir)
    return env


def test_materialize_everything_from_the_terminal(api_server, fresh_database, tmp_path):
    warehouse_url, storage_url = fresh_database(), fresh_database()
    api = api_server(records=1234, seed=7)
    partition = utc_today().isoformat()
    env = {
        **os.environ,
        **deployment_env(tmp_path / "dagster_home", storage_url),
        "MOOVITAMIX_API_URL": api.base_url,
        "MOOVITAMIX_DATABASE_URL": warehouse_url,
    }
    cmd = [
        DAGSTER,
        "asset", "materialize",
        "-m", "moovitamix_assets.definitions",
        "--select", "*",
        "--partition", partition,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    warehouse = sa.create_engine(warehouse_url)
    with warehouse.connect() as conn:
        for endpoint in ("users", "tracks", "listen_history"):
            stored = conn.execute(
                sa.text(f"SELECT count(*) FROM raw.{endpoint} WHERE snapshot_date = :d"),
                {"d": partition},
            ).scalar_one()
            api_total = (
                api.config.data.n_users if endpoint != "tracks" else api.config.data.n_tracks
            )
            assert stored == api_total == 1234, endpoint
        # One core row per distinct id: the default data repeats a few ids, as the contract allows.
        distinct_ids = conn.execute(
            sa.text("SELECT count(DISTINCT id) FROM raw.users WHERE snapshot_date = :d"),
            {"d": partition},
        ).scalar_one()
        assert conn.execute(sa.text("SELECT count(*) FROM core.users")).scalar_one() == distinct_ids
        assert distinct_ids > 0.99 * 1234
        assert conn.execute(sa.text("SELECT count(*) FROM core.listen_events")).scalar_one() > 0
    warehouse.dispose()

    # The run, its events and the materializations live in the PostgreSQL instance storage.
    storage = sa.create_engine(storage_url)
    with storage.connect() as conn:
        runs = conn.execute(sa.text("SELECT status FROM runs")).scalars().all()
        assert runs == ["SUCCESS"]
        materialized = conn.execute(
            sa.text(
                "SELECT count(DISTINCT asset_key) FROM event_logs "
                "WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
            )
        ).scalar_one()
        assert materialized == 12  # 3 raw + 4 core + 5 ml
    storage.dispose()


def test_an_old_partition_is_refused_from_the_terminal(api_server, pg_url, tmp_path):
    api = api_server(records=100)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "MOOVITAMIX_API_URL": api.base_url,
        "MOOVITAMIX_DATABASE_URL": pg_url,
    }
    cmd = [
        DAGSTER,
        "asset", "materialize",
        "-m", "moovitamix_assets.definitions",
        "--select", "raw/users",
        "--partition", "2026-11-01",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "past states cannot be fetched again" in proc.stdout + proc.stderr
    # Refused before any request: nothing of today's data was fetched under the old date.
    assert sum(e["requests"] for e in api.stats().values()) == 0
