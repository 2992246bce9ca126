"""Toy code location for the alert-sensor tests: a failing check, a raising asset, a stale asset.

It is a module (not test-local definitions) because the freshness daemon loads a code location
by module, like `dagster dev` does.
"""

from datetime import timedelta

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    Definitions,
    FreshnessPolicy,
    StaticPartitionsDefinition,
    asset,
    asset_check,
)

from moovitamix_assets.alerts import AlertNotifier
from moovitamix_assets.defs.monitoring.sensors import ALERT_SENSORS

DAYS = StaticPartitionsDefinition(["2026-04-08", "2026-04-09"])
FAIL_WINDOW = timedelta(minutes=1)


@asset(key_prefix="toy", partitions_def=DAYS)
def listens(context: AssetExecutionContext) -> int:
    """Partitioned toy asset: a row count per day (none on 2026-04-09)."""
    return 0 if context.partition_key == "2026-04-09" else 5


@asset_check(asset=listens, partitions_def=DAYS, description="At least one listen per day.")
def listens_not_empty(context, listens: int) -> AssetCheckResult:
    """Fails with ERROR severity when the partition is empty."""
    return AssetCheckResult(
        passed=listens >= 1,
        severity=AssetCheckSeverity.ERROR,
        metadata={"observed": listens, "threshold": 1},
    )


@asset_check(asset=listens, partitions_def=DAYS, description="A soft expectation on volume.")
def listens_volume_warning(listens: int) -> AssetCheckResult:
    """Always fails, with WARN severity only."""
    return AssetCheckResult(
        passed=False,
        severity=AssetCheckSeverity.WARN,
        metadata={"observed": listens, "expected": ">= 1000"},
    )


@asset_check(asset=listens, partitions_def=DAYS)
def listens_shape(listens: int) -> AssetCheckResult:
    """Fails with ERROR severity and metadata that has no observed/expected keys."""
    return AssetCheckResult(
        passed=listens > 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={"null_user_ids": 3, "columns": "user_id,track_id"},
    )


@asset(key_prefix="toy", partitions_def=DAYS)
def broken(context: AssetExecutionContext) -> None:
    """Always raises, to produce failed runs."""
    raise ValueError(f"upstream file missing for {context.partition_key}")


@asset(key_prefix="toy")
def healthy() -> int:
    """Always succeeds."""
    return 1


@asset(key_prefix="toy", freshness_policy=FreshnessPolicy.time_window(fail_window=FAIL_WINDOW))
def daily_summary() -> int:
    """Expected to be refreshed at least once a minute."""
    return 1


defs = Definitions(
    assets=[listens, broken, healthy, daily_summary],
    asset_checks=[listens_not_empty, listens_volume_warning, listens_shape],
    sensors=ALERT_SENSORS,
    # Tests hand the sensors their own notifier; this one only makes the location complete.
    resources={"alert_notifier": AlertNotifier()},
)
