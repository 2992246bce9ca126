"""The promotion gate: a blocking check between a candidate model and production.

The candidate asset evaluates the candidate, the popularity baseline and the production model on
the same held-out listens and stores the gate's verdict (``ml.gating.decide_promotion``) in its
registry row. This check reports that verdict: when it fails (severity ERROR, blocking), Dagster
does not run ``ml/production_model``, so production stays as it was; the reason is on the check
in the UI and in ``ml.model_registry.gate_reason``.
"""

from typing import Any

import dagster as dg

from moovitamix_assets.assets.recommendation import keys, registry
from moovitamix_assets.resources.database import PostgresResource


def _figure(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return dg.MetadataValue.text(str(value))
    if isinstance(value, int | float):
        return dg.MetadataValue.float(float(value))
    return dg.MetadataValue.text(str(value))


def gate_result(entry: registry.RegistryEntry | None) -> dg.AssetCheckResult:
    """Turn a registry row's stored verdict into the check's result and metadata."""
    if entry is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description="no candidate model is registered: nothing to promote",
            metadata={"reason": dg.MetadataValue.text("no candidate registered")},
        )
    figures = entry.gate_figures
    required = [
        v
        for v in (figures.get("required_vs_baseline"), figures.get("required_vs_production"))
        if v is not None
    ]
    metadata: dict[str, Any] = {
        "reason": dg.MetadataValue.text(entry.gate_reason),
        "candidate_version": dg.MetadataValue.int(entry.version),
        # The alert sensor shows observed against threshold.
        "observed": _figure(figures.get("candidate")),
        "threshold": _figure(max(required) if required else None),
        **{f"gate_{name}": _figure(value) for name, value in sorted(figures.items())},
    }
    production_version = entry.metrics.get("production_version")
    if production_version is not None:
        metadata["production_version"] = dg.MetadataValue.int(int(production_version))
    return dg.AssetCheckResult(
        passed=entry.gate_passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=entry.gate_reason,
        metadata=metadata,
    )


@dg.asset_check(
    asset=keys.CANDIDATE_MODEL,
    name="promotion_gate",
    blocking=True,
    description=(
        "Blocks promotion unless the candidate beats popularity by the margin and does not "
        "regress against production beyond the tolerance, on the same held-out listens."
    ),
)
def promotion_gate(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource
) -> dg.AssetCheckResult:
    """Blocks promotion unless the candidate beats popularity and does not regress vs production."""
    engine = postgres.engine()
    # The candidate of this run; a check run on its own judges the newest candidate.
    entry = registry.entry_for_run(engine, context.run.run_id) or registry.latest_entry(engine)
    return gate_result(entry)


recommendation_checks = [promotion_gate]
