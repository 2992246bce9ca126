"""The project as a dg project: `dg check defs`, `dg list defs` and `dg launch`, for real."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from moovitamix_assets.partitions import utc_today

REPO = Path(__file__).resolve().parents[2]
DG = str(Path(sys.executable).with_name("dg"))

pytestmark = [pytest.mark.e2e]


def dg(*args: str, env: dict[str, str] | None = None, timeout: int = 300):
    return subprocess.run(
        [DG, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_dg_checks_and_lists_the_definitions() -> None:
    checked = dg("check", "defs")
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = dg("list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    defs = json.loads(listed.stdout)
    assets = {asset["asset_key"] for asset in defs["assets"]}
    assert {
        "raw/users",
        "raw/tracks",
        "raw/listen_history",
        "core/users",
        "core/tracks",
        "core/listen_events",
        "core/user_track_interactions",
        "ml/evaluation_holdout",
        "ml/candidate_model",
        "ml/production_model",
        "ml/production_model_evaluation",
        "ml/user_recommendations",
    } == assets
    assert all(asset["description"] for asset in defs["assets"])
    assert {"daily_refresh", "model_retraining"} <= {job["name"] for job in defs["jobs"]}


@pytest.mark.http
def test_dg_launch_materializes_the_whole_graph_for_a_day(api_server, fresh_database, tmp_path):
    warehouse_url = fresh_database()
    api = api_server(records=300, seed=3)
    partition = utc_today().isoformat()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "MOOVITAMIX_API_URL": api.base_url,
        "MOOVITAMIX_DATABASE_URL": warehouse_url,
    }
    launched = dg("launch", "--assets", "*", "--partition", partition, env=env)
    assert launched.returncode == 0, launched.stderr[-4000:]
    with sa.create_engine(warehouse_url).connect() as conn:
        served = conn.execute(
            sa.text("SELECT count(DISTINCT user_id) FROM ml.user_recommendations")
        )
        active = conn.execute(sa.text("SELECT count(*) FROM core.users WHERE is_active"))
        assert served.scalar_one() == active.scalar_one() > 0
