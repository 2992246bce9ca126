"""Freshness: every asset of the code location has a policy that fits the daily schedule, and the
real freshness daemon reports an asset past its window as failing.

Driving the daemon without `dagster-daemon` needs Dagster internals; the approach (and the
`evaluate_freshness` helper) is the one of the freshness alert-sensor tests, here applied to the
project's own code location instead of a toy one.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

from moovitamix_assets import definitions
from moovitamix_assets.defs.ingestion.schedule import DEFAULT_DAILY_CRON
from moovitamix_assets.freshness import DAILY_FRESHNESS
from moovitamix_assets_tests.defs.monitoring.test_freshness_alert_sensor import evaluate_freshness

RAW_USERS = dg.AssetKey(["raw", "users"])
RAW_TRACKS = dg.AssetKey(["raw", "tracks"])
CORE_USERS = dg.AssetKey(["core", "users"])


def materializable_keys() -> list[dg.AssetKey]:
    graph = definitions.defs.resolve_asset_graph()
    return sorted(graph.materializable_asset_keys)


def test_every_materializable_asset_has_a_freshness_policy() -> None:
    graph = definitions.defs.resolve_asset_graph()
    keys = materializable_keys()
    assert {RAW_USERS, CORE_USERS} <= set(keys)
    missing = [k.to_user_string() for k in keys if graph.get(k).freshness_policy is None]
    assert missing == []


def test_daily_windows_fit_the_daily_schedule() -> None:
    # The nightly run comes every 24 h: the windows must leave a day plus the run's own time.
    assert DEFAULT_DAILY_CRON == "0 2 * * *"
    warn = DAILY_FRESHNESS.warn_window.to_timedelta()
    fail = DAILY_FRESHNESS.fail_window.to_timedelta()
    assert timedelta(hours=24) < warn < fail <= timedelta(hours=30)
    graph = definitions.defs.resolve_asset_graph()
    for key in materializable_keys():
        if graph.get(key).partitions_def is not None and key.path[0] in ("raw", "core"):
            assert graph.get(key).freshness_policy == DAILY_FRESHNESS, key


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@contextmanager
def project_workspace(instance: dg.DagsterInstance) -> Iterator[WorkspaceProcessContext]:
    """The project's code location loaded in process, as the daemon of `dagster dev` sees it."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name=definitions.__name__, attribute="defs"),
        location_name="moovitamix_assets",
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
        yield context


def report(instance: dg.DagsterInstance, key: dg.AssetKey, when: datetime) -> None:
    """Record a materialization of one day's partition at a given time (no run needed)."""
    with freeze_time(when):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=key, partition=when.date().isoformat())
        )


def states(instance: dg.DagsterInstance, keys: list[dg.AssetKey]) -> dict[str, str]:
    records = instance.get_freshness_state_records(keys)
    return {k.to_user_string(): records[k].freshness_state.value for k in keys if k in records}


def test_an_asset_past_its_window_is_reported_failing(instance: dg.DagsterInstance) -> None:
    now = datetime.now(timezone.utc)
    report(instance, RAW_USERS, now - timedelta(hours=28))  # past the 27 h fail window
    report(instance, RAW_TRACKS, now - timedelta(hours=26))  # past the 25 h warn window only
    report(instance, CORE_USERS, now - timedelta(hours=2))  # last night's run

    with project_workspace(instance) as workspace:
        evaluate_freshness(workspace)

    assert states(instance, [RAW_USERS, RAW_TRACKS, CORE_USERS]) == {
        "raw/users": "FAIL",
        "raw/tracks": "WARN",
        "core/users": "PASS",
    }
