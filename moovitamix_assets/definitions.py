"""The one code location: every asset, check, resource, job, schedule and sensor of the platform."""

from __future__ import annotations

import os

import dagster as dg

from moovitamix_assets.alerts import DEFAULT_UI_URL, AlertNotifier
from moovitamix_assets.defs.core.assets import core_assets
from moovitamix_assets.defs.core.checks import core_checks
from moovitamix_assets.defs.ingestion import schedule
from moovitamix_assets.defs.ingestion.api import MoovitamixApiResource
from moovitamix_assets.defs.ingestion.assets import raw_assets
from moovitamix_assets.defs.ingestion.checks import raw_checks
from moovitamix_assets.defs.monitoring.sensors import ALERT_SENSORS
from moovitamix_assets.defs.recommendation import retraining
from moovitamix_assets.defs.recommendation.assets import recommendation_assets
from moovitamix_assets.defs.recommendation.checks import recommendation_checks
from moovitamix_assets.warehouse.database import PostgresResource
from moovitamix_assets.warehouse.io_manager import PostgresPandasIOManager


def env_or_default(name: str, default: str | None) -> dg.EnvVar | str | None:
    """An ``EnvVar`` when set (the UI shows its name, never its value), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def build_resources() -> dict[str, object]:
    """The platform's resources, configured from the environment in this one place."""
    postgres = PostgresResource(database_url=env_or_default("MOOVITAMIX_DATABASE_URL", None))
    return {
        "moovitamix_api": MoovitamixApiResource(
            base_url=env_or_default("MOOVITAMIX_API_URL", "http://127.0.0.1:8000")
        ),
        "postgres": postgres,
        "warehouse_io_manager": PostgresPandasIOManager(database=postgres),
        "alert_notifier": AlertNotifier(
            webhook_url=env_or_default("MOOVITAMIX_ALERT_WEBHOOK_URL", None),
            ui_base_url=env_or_default("MOOVITAMIX_UI_URL", DEFAULT_UI_URL),
        ),
    }


defs = dg.Definitions(
    assets=[*raw_assets, *core_assets, *recommendation_assets],
    asset_checks=[*raw_checks, *core_checks, *recommendation_checks],
    jobs=[schedule.daily_refresh_job, retraining.retraining_job],
    schedules=[
        schedule.build_daily_schedule(
            os.environ.get("MOOVITAMIX_DAILY_CRON", schedule.DEFAULT_DAILY_CRON)
        ),
        retraining.build_weekly_retraining_schedule(
            os.environ.get("MOOVITAMIX_RETRAINING_CRON", retraining.DEFAULT_WEEKLY_RETRAINING_CRON)
        ),
    ],
    sensors=[*ALERT_SENSORS, retraining.build_retraining_sensor(retraining.thresholds_from_env())],
    resources=build_resources(),
    # One process per run: at our sizes a process per step costs more than it saves.
    executor=dg.in_process_executor,
)
