"""The Dagster UI in a real browser: assets, their checks and the schedule, as operators see them.

`dagster-webserver` serves the project's workspace.yaml on loopback, with its own DAGSTER_HOME in
tmp_path and the warehouse pointed at this test's database (nothing touches the project's state
folder). One day is materialized first, so the graph shows checks that ran. Headless Chromium opens
the pages; the asset graph's screenshot is kept in tmp_path, and copied to
docs/images/asset-graph.png when MOOVITAMIX_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from moovitamix_assets.defs.ingestion.checks import RAW_CHECKS
from moovitamix_assets.partitions import utc_today
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets_tests.checks.pipeline import run_day
from moovitamix_assets_tests.e2e.browser import dagster_webserver, find_chromium, headless_chromium

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.http]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "images" / "asset-graph.png"
UPDATE_SCREENSHOT_ENV = "MOOVITAMIX_UPDATE_SCREENSHOT"
# Variables of the developer's own setup that must not leak into the webserver under test.
_SCRUBBED_PREFIXES = ("MOOVITAMIX_", "DAGSTER_")

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


def test_the_ui_shows_assets_checks_and_schedule(
    chromium: str, api_server, pg_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    api = api_server(records=300)
    env = webserver_env(home, pg_url, api.base_url)

    with dagster_webserver(REPO / "workspace.yaml", env, tmp_path / "webserver.log") as ui:
        # While the webserver loads the code location: one good day into its instance.
        with dg.DagsterInstance.from_config(str(home)) as instance:
            day = run_day(
                api.base_url, PostgresResource(database_url=pg_url), utc_today(), instance=instance
            )
        assert day.success

        with headless_chromium(chromium, tmp_path / "chromium-profile") as page:
            page.navigate(ui + GRAPH_PATH)
            # Every raw and core asset, each with its checks all passed for the day.
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
            shot = page.screenshot(tmp_path / "asset-graph.png")

            page.navigate(ui + "/assets/raw/users?view=checks")
            text = page.wait_for_text(
                ["Checks (6)", "This is a blocking asset check.", *[c.name for c in RAW_CHECKS]]
            )
            assert "Not evaluated" not in text

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

    assert shot.stat().st_size > 20_000  # a rendered graph, not a blank page
    if os.environ.get(UPDATE_SCREENSHOT_ENV) == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
