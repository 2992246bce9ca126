"""`dagster asset materialize` with a selection that cuts through a multi-asset check op.

core/users and core/tracks share one check op; selecting core/users (and the raw snapshots it
needs) from the terminal must run that op for core/users' checks only.
"""

import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from moovitamix_assets.cli import DAGSTER
from moovitamix_assets.partitions import FIRST_DAY_ENV, utc_today

pytestmark = [pytest.mark.e2e, pytest.mark.http]


def test_selecting_one_asset_from_the_terminal_runs_only_its_checks(
    api_server, pg_url: str, tmp_path: Path
) -> None:
    api = api_server(records=200)
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if (not k.startswith(("MOOVITAMIX_", "DAGSTER_")) or k == FIRST_DAY_ENV)
        },
        "DAGSTER_HOME": str(home),
        "MOOVITAMIX_API_URL": api.base_url,
        "MOOVITAMIX_DATABASE_URL": pg_url,
    }
    cmd = [
        DAGSTER,
        "asset", "materialize",
        "-m", "moovitamix_assets.definitions",
        "--select", "raw/users,core/users",
        "--partition", utc_today().isoformat(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        events = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluated = {
        (e.dagster_event.event_specific_data.asset_key.to_user_string(),
         e.dagster_event.event_specific_data.check_name): e.dagster_event.event_specific_data.passed
        for e in events
    }  # fmt: skip
    assert {asset for asset, _ in evaluated} == {"raw/users", "core/users"}
    assert {check for asset, check in evaluated if asset == "core/users"} == {
        "primary_key",
        "timestamps_sane",
        "email_validity",
        "inactive_share",
    }
    assert len(evaluated) == 10 and all(evaluated.values())
