"""The whole graph on listening with no taste structure, three days in a row, from empty databases.

On structureless data (``--taste none``: every listen is a uniform draw over the catalogue) a
trained model can only tie popularity, so the right outcome is: every run succeeds, the
registered genre-aware popularity fallback serves every active user exactly K unheard tracks, and
each day's ALS candidate is registered as refused with a WARN-severity ``promotion_gate`` result.

The same three days go through each real entry point, each on a database of its own:
``dagster asset materialize --select '*'`` in a subprocess, the CLI behind ``make run`` (which
starts its own stand-in, configured through ``MOOVITAMIX_STANDIN_TASTE``), and the
``daily_refresh`` then ``model_retraining`` jobs of the code location, run in process. The last
of the three days is a quiet one: the API serves the same state as the day before, so no listen
is new. See ``platform_runs`` for the test clock that makes each partition "today".
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from moovitamix_api.config import TASTE_ENV, TASTES, DataConfig
from moovitamix_api.data import Dataset
from moovitamix_api.server import StandInProcess, run_subprocess
from moovitamix_assets.cli import DAGSTER
from moovitamix_assets.definitions import build_resources, defs
from moovitamix_assets.defs.recommendation.retraining import EXCLUSIVE_TAG, RETRAINING_JOB_NAME
from moovitamix_assets.partitions import FIRST_DAY_ENV
from moovitamix_assets_tests.e2e.platform_runs import (
    CLOCK_MODULE,
    Day,
    assert_every_active_user_served,
    assert_fallback_serves,
    assert_recommendation_checks_passed,
    assert_refusal_is_a_warning,
    check_evaluations,
    clock_env,
    serving_state,
    three_days,
    write_clock_site,
)

pytestmark = [pytest.mark.e2e, pytest.mark.http]

USERS = 1_500
SEED = 42
# Active users after churn, null user ids and the default's few repeated ids: nearly all of them.
MIN_ACTIVE = int(0.97 * USERS)
# Three full runs of the graph per test on 2 busy cores.
TIMEOUT_S = 900


@pytest.fixture(scope="module")
def days() -> list[Day]:
    return three_days()


@pytest.fixture(scope="module")
def clock_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clock_site(tmp_path_factory.mktemp("clock_site"))


@pytest.fixture
def structureless_api(days: list[Day]) -> Iterator[StandInProcess]:
    """``python -m moovitamix_api --taste none`` with 1,500 users, serving the first day."""
    args = ["--records", str(USERS), "--seed", str(SEED), "--taste", "none"]
    with run_subprocess([*args, "--day", days[0].served]) as api:
        assert api.admin("/_standin/config")["data"]["favourite_share"] == 0.0
        yield api


def platform_env(**overrides: str) -> dict[str, str]:
    """This environment minus the caller's MooVitamix and Dagster settings, plus ``overrides``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith(("MOOVITAMIX_", "DAGSTER_")) or k == FIRST_DAY_ENV)
        and k != "PYTHONPATH"
    }
    return {**env, **overrides}


def newest_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    (run,) = instance.get_runs(limit=1)
    return run


def assert_day_served(warehouse_url: str, day: Day, refused: int, pairs_before: int | None) -> int:
    """Every active user served by the fallback; returns the listened pairs on file."""
    state = serving_state(warehouse_url)
    assert_every_active_user_served(state, MIN_ACTIVE)
    assert_fallback_serves(state, refused=refused)
    if pairs_before is not None:
        # The quiet day really brought no new listen; the others did.
        assert (state.listen_pairs == pairs_before) == day.quiet, (day, state.listen_pairs)
    return state.listen_pairs


@pytest.mark.timeout(TIMEOUT_S)
def test_dagster_asset_materialize_serves_the_fallback_three_days_in_a_row(
    structureless_api: StandInProcess,
    fresh_database: Callable[[], str],
    clock_site: Path,
    days: list[Day],
    tmp_path: Path,
) -> None:
    warehouse = fresh_database()
    home = tmp_path / "dagster_home"
    home.mkdir()
    pairs = None
    for number, day in enumerate(days, start=1):
        structureless_api.admin("/_standin/day", {"day": day.served})
        env = platform_env(
            DAGSTER_HOME=str(home),
            MOOVITAMIX_API_URL=structureless_api.base_url,
            MOOVITAMIX_DATABASE_URL=warehouse,
        )
        cmd = [
            DAGSTER,
            "asset", "materialize",
            "-m", "moovitamix_assets.definitions",
            "--select", "*",
            "--partition", day.partition,
        ]  # fmt: skip
        proc = subprocess.run(
            cmd,
            env=clock_env(clock_site, day.partition, env),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
        assert proc.returncode == 0, (day, proc.stderr[-4000:])

        with dg.DagsterInstance.from_config(str(home)) as instance:
            run = newest_run(instance)
            assert run.status == dg.DagsterRunStatus.SUCCESS, day
            assert run.tags.get("dagster/partition") == day.partition
            evaluations = check_evaluations(instance, run.run_id)
        assert_recommendation_checks_passed(evaluations)
        assert_refusal_is_a_warning(evaluations)
        pairs = assert_day_served(warehouse, day, number, pairs)

    # What an operator sees: the fallback in production, each day's candidate refused.
    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "moovitamix_assets.registry_cli",
            "--database-url",
            warehouse,
            "list",
        ],
        env=platform_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr[-4000:]
    states = [line.split()[1:3] for line in listing.stdout.splitlines() if line.startswith("v")]
    assert sorted(states) == [["production", "genre_popularity"]] + [["refused", "als"]] * 3, (
        listing.stdout
    )


@pytest.mark.timeout(TIMEOUT_S)
def test_the_run_command_serves_the_fallback_three_days_in_a_row(
    fresh_database: Callable[[], str],
    clock_site: Path,
    days: list[Day],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warehouse, storage = fresh_database(), fresh_database()
    state_dir = tmp_path / "state"
    pairs = None
    for number, day in enumerate(days, start=1):
        env = platform_env(
            # As `make run` calls it: the virtualenv's python, the virtualenv NOT on PATH.
            PATH="/usr/bin:/bin",
            MOOVITAMIX_DATABASE_URL=warehouse,
            MOOVITAMIX_DAGSTER_STORAGE_URL=storage,
            MOOVITAMIX_STATE_DIR=str(state_dir),
            # `MOOVITAMIX_STANDIN_TASTE=none make run`: the CLI's own stand-in reads them.
            **{TASTE_ENV: "none", "MOOVITAMIX_STANDIN_DAY": day.served},
        )
        proc = subprocess.run(
            [
                sys.executable, "-m", "moovitamix_assets.cli", "run",
                "--records", str(USERS), "--partition", day.partition,
            ],
            env=clock_env(clock_site, day.partition, env),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )  # fmt: skip
        assert proc.returncode == 0, (day, proc.stderr[-4000:])
        assert "taste none" in proc.stdout
        assert f"Materialized every asset for {day.partition}" in proc.stdout

        monkeypatch.setenv("MOOVITAMIX_DAGSTER_STORAGE_URL", storage)
        with dg.DagsterInstance.from_config(str(state_dir / "dagster_home")) as instance:
            run = newest_run(instance)
            assert run.status == dg.DagsterRunStatus.SUCCESS, day
            evaluations = check_evaluations(instance, run.run_id)
        assert_recommendation_checks_passed(evaluations)
        assert_refusal_is_a_warning(evaluations)
        pairs = assert_day_served(warehouse, day, number, pairs)
        if number == 1:
            assert_stand_in_had_no_taste(warehouse, day)


def assert_stand_in_had_no_taste(warehouse_url: str, day: Day) -> None:
    """The CLI's stand-in served the structureless generator's histories, not the default's."""
    engine = sa.create_engine(warehouse_url)
    try:
        with engine.connect() as conn:
            stored: dict[int, set[int]] = {}
            for user_id, track_id in conn.execute(
                sa.text("SELECT user_id, track_id FROM core.listen_events")
            ):
                stored.setdefault(user_id, set()).add(track_id)
    finally:
        engine.dispose()

    def histories(**knobs: float) -> dict[int, set[int]]:
        dataset = Dataset(DataConfig(records=USERS, seed=SEED, day=day.served, **knobs))
        return {
            h["user_id"]: set(h["items"])
            for h in dataset.iter_records("listen_history")
            if h["user_id"] is not None and h["items"]
        }

    for knobs, expected_share in ((TASTES["none"], 1.0), ({}, 0.0)):
        generated = histories(**knobs)
        same = sum(stored.get(user) == tracks for user, tracks in generated.items())
        assert abs(same / len(generated) - expected_share) < 0.02, (knobs, same, len(generated))


@pytest.mark.timeout(TIMEOUT_S)
def test_the_daily_and_retraining_jobs_serve_the_fallback_three_days_in_a_row(
    structureless_api: StandInProcess,
    fresh_database: Callable[[], str],
    days: list[Day],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warehouse = fresh_database()
    monkeypatch.setenv("MOOVITAMIX_DATABASE_URL", warehouse)
    monkeypatch.setenv("MOOVITAMIX_API_URL", structureless_api.base_url)
    # The code location's own jobs; its resources wired from this environment as when deployed.
    daily = defs.resolve_job_def("daily_refresh")
    retraining = defs.resolve_job_def(RETRAINING_JOB_NAME)
    pairs = None
    with dg.DagsterInstance.ephemeral() as instance:
        for number, day in enumerate(days, start=1):
            structureless_api.admin("/_standin/day", {"day": day.served})
            clock = importlib.import_module(CLOCK_MODULE)
            monkeypatch.setattr(clock, "utc_today", lambda day=day: _date(day.partition))

            refreshed = daily.execute_in_process(
                partition_key=day.partition,
                instance=instance,
                resources=build_resources(),
                raise_on_error=False,
            )
            assert refreshed.success, (day, _failure(refreshed))
            assert_recommendation_checks_passed(_evaluations(refreshed))
            pairs = assert_day_served(warehouse, day, number - 1, pairs)

            retrained = retraining.execute_in_process(
                instance=instance, resources=build_resources(), raise_on_error=False
            )
            assert retrained.success, (day, _failure(retrained))
            assert retrained.dagster_run.tags.get(EXCLUSIVE_TAG) == RETRAINING_JOB_NAME
            evaluations = _evaluations(retrained)
            assert_recommendation_checks_passed(evaluations)
            assert_refusal_is_a_warning(evaluations)
            assert_day_served(warehouse, day, number, None)


def _evaluations(
    result: dg.ExecuteInProcessResult,
) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    return "; ".join(f"{e.step_key}: {e.message}" for e in result.all_events if e.is_failure)[
        -4000:
    ]
