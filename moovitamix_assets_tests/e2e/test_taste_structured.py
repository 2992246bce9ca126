"""On the stand-in's default, taste-structured listening the trained model beats the fallback.

The counterpart of ``test_structureless_days``: users listen mostly within a genre and a scene,
so an ALS model learns what genre popularity cannot, and one ``dagster asset materialize --select
'*'`` from an empty database promotes it with a lift whose lower confidence bound is above zero.
This test relies on taste structure, as its name says.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from moovitamix_api.server import run_subprocess
from moovitamix_assets.cli import DAGSTER
from moovitamix_assets.partitions import FIRST_DAY_ENV, utc_today
from moovitamix_assets_tests.e2e.platform_runs import (
    ALS,
    CANDIDATE_MODEL,
    assert_every_active_user_served,
    assert_recommendation_checks_passed,
    check_evaluations,
    serving_state,
)

pytestmark = [pytest.mark.e2e, pytest.mark.http]

USERS = 1_500


@pytest.mark.timeout(600)
def test_taste_structured_data_promotes_the_als_candidate(
    fresh_database: Callable[[], str], tmp_path: Path
) -> None:
    warehouse = fresh_database()
    home = tmp_path / "dagster_home"
    home.mkdir()
    partition = utc_today().isoformat()
    with run_subprocess(["--records", str(USERS), "--taste", "structured"]) as api:
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if (not k.startswith(("MOOVITAMIX_", "DAGSTER_")) or k == FIRST_DAY_ENV)
            },
            "DAGSTER_HOME": str(home),
            "MOOVITAMIX_API_URL": api.base_url,
            "MOOVITAMIX_DATABASE_URL": warehouse,
        }
        cmd = [
            DAGSTER,
            "asset", "materialize",
            "-m", "moovitamix_assets.definitions",
            "--select", "*",
            "--partition", partition,
        ]  # fmt: skip
        proc = subprocess.run(
            cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
    assert proc.returncode == 0, proc.stderr[-4000:]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        evaluations = check_evaluations(instance, run.run_id)
    assert_recommendation_checks_passed(evaluations)
    gate = evaluations[(CANDIDATE_MODEL, "promotion_gate")]
    figures = {name: value.value for name, value in gate.metadata.items()}
    assert gate.passed, gate.description
    assert figures["gate_verdict"] == "significant", figures
    # The lift's whole confidence interval is above zero: not a chance win.
    assert figures["gate_lift_low_pct"] > 0, figures
    assert figures["gate_candidate"] > figures["gate_serving"], figures

    state = serving_state(warehouse)
    assert_every_active_user_served(state, int(0.97 * USERS))
    (production,) = state.production
    assert production["model_type"] == ALS and production["gate_passed"], state.registry
    assert figures["candidate_version"] == production["version"]
    assert state.served_versions == {production["version"]}
