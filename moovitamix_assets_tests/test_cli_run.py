"""`make run`'s command, for real: the stand-in it starts, a real PostgreSQL, the whole graph."""

import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.http]


def test_the_run_command_materializes_everything_and_summarizes(fresh_database, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "MOOVITAMIX_API_URL")}
    env.update(
        # As `make run` calls it: the virtualenv's python, the virtualenv NOT on PATH.
        PATH="/usr/bin:/bin",
        MOOVITAMIX_DATABASE_URL=fresh_database(),
        MOOVITAMIX_DAGSTER_STORAGE_URL=fresh_database(),
        MOOVITAMIX_STATE_DIR=str(tmp_path / "state"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "moovitamix_assets.cli", "run", "--records", "300"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert "Materialized every asset for" in out
    for endpoint in ("users", "tracks", "listen_history"):
        # table, rows stored, the API's total, rejects
        assert re.search(rf"raw\.{endpoint}\s+300\s+300\s+0\b", out), out
    assert re.search(r"ml\.user_recommendations\s+[1-9]\d*", out), out
    # Dagster's home was made in the state folder, so `make ui` shows these runs.
    assert (tmp_path / "state" / "dagster_home" / "dagster.yaml").exists()
