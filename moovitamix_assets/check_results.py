"""From an audit's outcome to a Dagster check result, with the ``observed`` and ``threshold``
metadata the alert sensor quotes, so the UI, the alert and the log agree."""

import math
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import dagster as dg

from moovitamix_assets.partitions import daily_partitions

Severity = Literal["ERROR", "WARN"]


def significant(value: float) -> float:
    """``value`` to 4 significant digits (0.0123456 -> 0.01235): rates, shares and metrics are
    estimates, more digits are noise on a plot or in an alert."""
    return float(f"{value:.4g}") if math.isfinite(value) else value


def figure(value: float | None) -> dg.MetadataValue:
    """A float for metadata, to significant digits; null when missing, NaN or infinite."""
    if value is None or not math.isfinite(value):
        return dg.MetadataValue.null()
    return dg.MetadataValue.float(significant(float(value)))


def percent(share: float | None) -> dg.MetadataValue:
    """A relative figure in percent (a lift of 0.125 is 12.5), for ``*_pct`` metadata."""
    return figure(None if share is None else 100 * share)


def _plain(value: object) -> float | int | str | None:
    # Numbers stay numbers (the UI plots them); NaN, infinity and e.g. a Decimal become text.
    if isinstance(value, float) and math.isfinite(value):
        return significant(value)
    return value if value is None or isinstance(value, int | str) else str(value)


def to_check_result(
    asset_key: dg.AssetKey, outcome: Any, extra: Mapping[str, Any]
) -> dg.AssetCheckResult:
    """The check result of an audit's outcome (an object with ``name``, ``passed``, ``observed``,
    ``threshold``, ``severity`` and ``description``; its name is the check's), plus ``extra``."""
    metadata = {"observed": outcome.observed, "threshold": outcome.threshold, **extra}
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity(outcome.severity),
        description=outcome.description,
        metadata={key: _plain(value) for key, value in metadata.items()},
    )


# Partitioned check specs are a preview in Dagster 1.13: that one warning is expected.
warnings.filterwarnings(
    "ignore", "Specifying a partitions_def on an AssetCheckSpec", dg.PreviewWarning
)


def daily_check_spec(name: str, asset_key: dg.AssetKey, **spec: Any) -> dg.AssetCheckSpec:
    """A check spec partitioned like the daily assets, so each day has its own verdict in the UI."""
    return dg.AssetCheckSpec(name, asset=asset_key, partitions_def=daily_partitions, **spec)


def selected_names(context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey) -> list[str]:
    """Names of the checks of one asset this execution must evaluate (the op may be subset)."""
    return sorted(k.name for k in context.selected_asset_check_keys if k.asset_key == asset_key)
