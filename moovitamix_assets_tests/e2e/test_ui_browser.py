"""The Dagster UI in a real browser: lineage, an asset's columns, checks, a run, the schedule.

`dagster-webserver` serves the project's workspace.yaml on loopback, with its own DAGSTER_HOME in
tmp_path and the warehouse pointed at this test's database (nothing touches the project's state
folder). A normal first day is materialized first (raw, core, then the recommendation layer), so
the pages show what ran. Headless Chromium opens them; the screenshots of the asset graph and of an
asset's columns are kept in tmp_path, and copied to docs/images/ when
MOOVITAMIX_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from moovitamix_assets.alerts import AlertNotifier
from moovitamix_assets.definitions import defs
from moovitamix_assets.defs.ingestion.checks import RAW_CHECKS
from moovitamix_assets.defs.recommendation.assets import recommendation_assets
from moovitamix_assets.defs.recommendation.checks import recommendation_checks
from moovitamix_assets.partitions import FIRST_DAY_ENV, utc_today
from moovitamix_assets.warehouse import columns
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets.warehouse.io_manager import PostgresPandasIOManager
from moovitamix_assets_tests.checks.pipeline import run_day
from moovitamix_assets_tests.e2e.browser import dagster_webserver, find_chromium, headless_chromium

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.http]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "images"
UPDATE_SCREENSHOT_ENV = "MOOVITAMIX_UPDATE_SCREENSHOT"
# Variables of the developer's own setup that must not leak into the webserver under test.
_SCRUBBED_PREFIXES = ("MOOVITAMIX_", "DAGSTER_")

KEYS = sorted(defs.resolve_asset_graph().get_all_asset_keys(), key=lambda k: k.to_user_string())
RECOMMENDATION_CHECKS = (
    "exactly_k_per_active_user",
    "none_already_listened",
    "only_active_tracks",
    "no_duplicates",
)
GRAPH_PATH = (
    "/assets/core/user_track_interactions?view=lineage&lineageScope=upstream&lineageDepth=3"
)


@pytest.fixture
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "Chromium is not installed (looked for /usr/bin/chromium and chromium on PATH): "
            "install Debian's package with `apt-get install -y chromium` to run the UI test"
        )
    return binary


def webserver_env(dagster_home: Path, database_url: str, api_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SCRUBBED_PREFIXES) or k == "MOOVITAMIX_FIRST_DAY"
    }
    env |= {
        "DAGSTER_HOME": str(dagster_home),
        "MOOVITAMIX_DATABASE_URL": database_url,
        "MOOVITAMIX_API_URL": api_url,
        # Its own state folder: the first day it records is not the clone's.
        "MOOVITAMIX_STATE_DIR": str(dagster_home / "state"),
    }
    return env


def _shown(description: str) -> str:
    """A column description as the UI renders its Markdown (no backticks, no bold)."""
    return description.replace("`", "").replace("**", "")


def test_the_ui_walks_lineage_an_assets_columns_and_checks_and_a_run(
    chromium: str, api_server, pg_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    api = api_server(records=300)
    day = utc_today()
    env = webserver_env(home, pg_url, api.base_url)
    # A fresh installation: its first partition is today, the first day it ran.
    env[FIRST_DAY_ENV] = day.isoformat()
    postgres = PostgresResource(database_url=pg_url)

    with dagster_webserver(REPO / "workspace.yaml", env, tmp_path / "webserver.log") as ui:
        # While the webserver loads the code location: a normal first day into its instance,
        # the raw and core graph for today, then the recommendation layer.
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert run_day(api.base_url, postgres, day, instance=instance).success
            models = dg.materialize(
                [*recommendation_assets, *recommendation_checks],
                instance=instance,
                resources={
                    "postgres": postgres,
                    "warehouse_io_manager": PostgresPandasIOManager(database=postgres),
                    "alert_notifier": AlertNotifier(),
                },
            )
        assert models.success
        with postgres.engine().connect() as conn:
            users = conn.execute(sa.text("SELECT count(*) FROM core.users")).scalar_one()

        with headless_chromium(chromium, tmp_path / "chromium-profile") as page:
            # Lineage: every raw and core asset, each with its checks all passed for the day.
            page.navigate(ui + GRAPH_PATH)
            page.wait_for_text(
                [
                    "ingestion",
                    "core",
                    "listen_history",
                    "listen_events",
                    "user_track_interactions",
                    "Asset checks",
                    "6 / 6 Passed",
                    "4 / 4 Passed",
                    "3 / 3 Passed",
                    "2 / 2 Passed",
                ]
            )
            page.click_button("Skip")  # the community pop-up of a fresh instance, if shown
            page.wait_for_text(["6 / 6 Passed"])
            graph = page.screenshot(tmp_path / "asset-graph.png")

            # The whole graph after the first day: no asset failed or missing (none red).
            page.navigate(ui + "/assets")
            page.wait_for_text([key.to_user_string().replace("/", " / ") for key in KEYS])
            partitioned = len(KEYS) - len(recommendation_assets)
            # Statuses arrive after the names: wait until every row has one.
            deadline = time.monotonic() + 60
            while True:
                text = page.text()
                lines = text.splitlines()
                statuses = (
                    lines.count("Materialized"),
                    lines.count("All"),
                    lines.count("1 partition"),
                )
                if statuses == (len(recommendation_assets), partitioned, partitioned):
                    break
                assert time.monotonic() < deadline, f"statuses {statuses}:\n{text[:4000]}"
                time.sleep(0.5)
            assert "Failed" not in text and "Missing" not in text

            # An asset: its row count and its columns, each with its description.
            page.navigate(ui + "/assets/core/users")
            table = columns.table("core.users")
            needles = [f"Row count\n{users}", "Columns", "Storage", table.name]
            needles += [text for c in table.columns for text in (c.name, _shown(c.description))]
            page.wait_for_text(needles)
            asset_columns = page.screenshot(tmp_path / "asset-columns.png")

            # The checks of an ml asset, all evaluated and passed.
            page.navigate(ui + "/assets/ml/user_recommendations?view=checks")
            text = page.wait_for_text(
                ["Checks (4)", "This is a blocking asset check.", *RECOMMENDATION_CHECKS]
            )
            assert text.count("Succeeded") >= len(RECOMMENDATION_CHECKS)
            assert "Not evaluated" not in text and "Failed" not in text

            page.navigate(ui + "/assets/raw/users?view=checks")
            text = page.wait_for_text(
                ["Checks (6)", "This is a blocking asset check.", *[c.name for c in RAW_CHECKS]]
            )
            assert "Not evaluated" not in text

            # Launching a raw asset offers today's partition only: the API has no past state.
            page.navigate(ui + "/assets/raw/users?view=partitions")
            page.wait_for_text(["Materialized (1)", "Missing (0)"])
            assert page.click_button("Materialize…")
            text = page.wait_for_text(
                ["Launch runs to materialize raw / users", "Showing 1 of 1 partitions"]
            )
            assert day.isoformat() in text
            assert (day - timedelta(days=1)).isoformat() not in text

            # A run: the recommendation layer's, its assets and checks, succeeded.
            page.navigate(ui + f"/runs/{models.run_id}")
            page.wait_for_text(
                ["Success", f"{len(recommendation_assets)} assets", "9 checks", "dagster/row_count"]
            )

            page.navigate(ui + "/automation")
            page.wait_for_text(
                [
                    "daily_refresh_schedule",
                    "Scheduled At 02:00 AM UTC",
                    "asset_check_failure_alert_sensor",
                    "freshness_failure_alert_sensor",
                    "run_failure_alert_sensor",
                ]
            )

    for shot in (graph, asset_columns):
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
        if os.environ.get(UPDATE_SCREENSHOT_ENV) == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, SCREENSHOTS / shot.name)
