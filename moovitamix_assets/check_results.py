"""From an audit's outcome to a Dagster check: specs and results with the metadata alerts read.

Every check result carries ``observed`` and ``threshold`` metadata (the alert sensor quotes them as
"observed vs expected") and the audit's own description, so the UI, the alert and the log all
say the same thing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Final, Literal, Protocol

import dagster as dg

from moovitamix_assets.partitions import daily_partitions

Severity = Literal["ERROR", "WARN"]

SEVERITIES: Final[dict[str, dg.AssetCheckSeverity]] = {
    "ERROR": dg.AssetCheckSeverity.ERROR,
    "WARN": dg.AssetCheckSeverity.WARN,
}

MetadataScalar = float | int | str | None


class CheckOutcome(Protocol):
    """What every audit function returns (``AuditResult`` and ``CoreAuditResult`` both are)."""

    @property
    def name(self) -> str: ...

    @property
    def passed(self) -> bool: ...

    @property
    def observed(self) -> MetadataScalar: ...

    @property
    def threshold(self) -> MetadataScalar: ...

    @property
    def severity(self) -> Severity: ...

    @property
    def blocking(self) -> bool: ...

    @property
    def description(self) -> str: ...


def metadata_value(value: MetadataScalar) -> dg.MetadataValue:
    """A typed metadata value: numbers stay numbers (the UI plots them), None is shown as null."""
    if value is None:
        return dg.MetadataValue.null()
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return (
            dg.MetadataValue.float(value)
            if math.isfinite(value)
            else dg.MetadataValue.text(str(value))
        )
    return dg.MetadataValue.text(str(value))


def to_check_result(
    asset_key: dg.AssetKey,
    outcome: CheckOutcome,
    extra: Mapping[str, MetadataScalar] | None = None,
) -> dg.AssetCheckResult:
    """Build the AssetCheckResult of one audit outcome.

    Args:
        asset_key: The checked asset.
        outcome: The audit's result; its name is the check's name.
        extra: Further metadata (figures an operator wants next to the verdict).

    Returns:
        The result, with the outcome's severity and ``observed``/``threshold`` metadata.
    """
    metadata = {
        "observed": metadata_value(outcome.observed),
        "threshold": metadata_value(outcome.threshold),
        **{key: metadata_value(value) for key, value in (extra or {}).items()},
    }
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=SEVERITIES[outcome.severity],
        description=outcome.description,
        metadata=metadata,
    )


def daily_check_spec(
    name: str, asset_key: dg.AssetKey, *, blocking: bool, description: str
) -> dg.AssetCheckSpec:
    """A check spec partitioned like the daily assets, so each day has its own verdict in the UI.

    Partitioned check specs are a preview feature of Dagster 1.13 (the version is pinned and the
    tests exercise it); its warning is silenced here, where we opt in, instead of being printed at
    every import of the code location.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name,
            asset=asset_key,
            blocking=blocking,
            description=description,
            partitions_def=daily_partitions,
        )


def selected_names(context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey) -> list[str]:
    """Names of the checks of one asset this execution must evaluate (the op may be subset)."""
    return sorted(k.name for k in context.selected_asset_check_keys if k.asset_key == asset_key)
